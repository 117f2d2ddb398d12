//! helm's `--set` syntax, so that `smm install X --set ...` means what `helm install --set ...`
//! means to someone who has typed it for years:
//!
//! - `a.b=1,c=x` sets several values; a `\` takes the next character literally (`a=b\,c`,
//!   `annotations.example\.com/x=1`);
//! - `a={x,y}` sets a list, `a[1]=x` and `a[0].b=1` set list items (missing items are null);
//! - values are typed as helm types them: `true`/`false`/`null` in any case, integers that do not
//!   start with `0` (other than `0` itself) are numbers, everything else is a string (`1.5`,
//!   `0123` and `1e3` stay strings, unlike YAML).
//!
//! It departs from helm only where helm silently does something no one asked for: `=1` (an
//! empty key) and `a[1]` (no `=`) are errors here, and `a={}` is an empty list, not `[""]`.

use serde_json::{Map, Value};

/// The largest list index `--set` accepts (helm's limit), so `a[999999999]=x` cannot allocate
/// a list of a billion nulls.
const MAX_INDEX: usize = 65536;
/// The most keys and indexes one `--set` path may have (helm refuses deeper paths too), so a
/// path of thousands of keys cannot build values too deep to merge or serialize.
const MAX_PATH_DEPTH: usize = 30;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--set {text:?}: {problem}")]
pub struct SetError {
    text: String,
    problem: Problem,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum Problem {
    #[error("key {0:?} has no value (expected KEY=VALUE, e.g. resources.requests.cpu=200m)")]
    NoValue(String),
    #[error(
        "an empty key{} (expected KEY=VALUE with a dotted KEY)",
        if .0.is_empty() { String::new() } else { format!(" after {:?}", .0) }
    )]
    EmptyKey(String),
    #[error("list index {0:?} is not a number")]
    BadIndex(String),
    #[error("list index {index} is above the largest supported, {MAX_INDEX}")]
    IndexTooLarge { index: usize },
    #[error("the path has {0} keys and indexes; at most {MAX_PATH_DEPTH} are supported")]
    TooDeep(usize),
    #[error("a list index is not closed with ']'")]
    UnclosedIndex,
    #[error("the list is not closed with '}}'")]
    UnclosedList,
    #[error("expected ',' after the list, found {0:?}")]
    AfterList(char),
    #[error("{path} is {found}, so {wanted} cannot be set")]
    Conflict {
        path: String,
        found: &'static str,
        wanted: String,
    },
}

/// One step of a path: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Parses one `--set` argument into the map of values it sets.
pub fn parse(text: &str) -> Result<Map<String, Value>, SetError> {
    let fail = |problem| SetError {
        text: text.to_owned(),
        problem,
    };
    let mut root = Value::Object(Map::new());
    let mut scanner = Scanner {
        chars: text.chars().peekable(),
    };
    while scanner.chars.peek().is_some() {
        let path = scanner.path().map_err(fail)?;
        if path.len() > MAX_PATH_DEPTH {
            return Err(fail(Problem::TooDeep(path.len())));
        }
        let value = scanner.value().map_err(fail)?;
        assign(&mut root, &path, value).map_err(fail)?;
    }
    match root {
        Value::Object(map) => Ok(map),
        _ => unreachable!("the root of --set values is always a map"),
    }
}

struct Scanner<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl Scanner<'_> {
    /// Text up to (not including) the first unescaped character in `stops`, unescaped.
    fn until(&mut self, stops: &[char]) -> String {
        let mut text = String::new();
        while let Some(&c) = self.chars.peek() {
            if stops.contains(&c) {
                break;
            }
            self.chars.next();
            if c == '\\' {
                if let Some(escaped) = self.chars.next() {
                    text.push(escaped);
                }
            } else {
                text.push(c);
            }
        }
        text
    }

    /// `a.b[0].c`, up to and including the `=`.
    fn path(&mut self) -> Result<Vec<Step>, Problem> {
        let mut steps = Vec::new();
        loop {
            let key = self.until(&['.', '[', '=', ',']);
            if key.is_empty() {
                return Err(Problem::EmptyKey(describe(&steps)));
            }
            steps.push(Step::Key(key));
            loop {
                match self.chars.next() {
                    Some('=') => return Ok(steps),
                    Some('.') => break,
                    Some('[') => steps.push(Step::Index(self.index()?)),
                    // `,` or the end: a key without `=`.
                    _ => return Err(Problem::NoValue(describe(&steps))),
                }
            }
        }
    }

    /// The `N]` of a list index.
    fn index(&mut self) -> Result<usize, Problem> {
        let digits = self.until(&[']', ',', '=']);
        if self.chars.next() != Some(']') {
            return Err(Problem::UnclosedIndex);
        }
        let index: usize = digits.parse().map_err(|_| Problem::BadIndex(digits))?;
        if index > MAX_INDEX {
            return Err(Problem::IndexTooLarge { index });
        }
        Ok(index)
    }

    /// The value after `=`, and the `,` that ends it.
    fn value(&mut self) -> Result<Value, Problem> {
        if self.chars.peek() != Some(&'{') {
            let text = self.until(&[',']);
            self.chars.next();
            return Ok(typed(text));
        }
        self.chars.next();
        let mut items = Vec::new();
        loop {
            if items.is_empty() && self.chars.peek() == Some(&'}') {
                self.chars.next();
                break;
            }
            items.push(typed(self.until(&[',', '}'])));
            match self.chars.next() {
                Some(',') => {}
                Some('}') => break,
                _ => return Err(Problem::UnclosedList),
            }
        }
        match self.chars.next() {
            None | Some(',') => Ok(Value::Array(items)),
            Some(other) => Err(Problem::AfterList(other)),
        }
    }
}

/// A scalar as helm's `--set` types it.
fn typed(text: String) -> Value {
    match text.to_ascii_lowercase().as_str() {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "null" => return Value::Null,
        "0" => return Value::from(0),
        _ => {}
    }
    if !text.starts_with('0')
        && let Ok(number) = text.parse::<i64>()
    {
        return Value::from(number);
    }
    Value::String(text)
}

/// `a.b[0]`, for messages.
fn describe(steps: &[Step]) -> String {
    let mut text = String::new();
    for step in steps {
        match step {
            Step::Key(key) if text.is_empty() => text.push_str(key),
            Step::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Step::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

/// Sets `value` at `path` below `node`, making maps and lists on the way; a later assignment
/// replaces an earlier one, but never reaches through a scalar (`a=1,a.b=2` is an error, as in
/// helm).
fn assign(node: &mut Value, path: &[Step], value: Value) -> Result<(), Problem> {
    let mut node = node;
    for (depth, step) in path.iter().enumerate() {
        if node.is_null() {
            *node = match step {
                Step::Key(_) => Value::Object(Map::new()),
                Step::Index(_) => Value::Array(Vec::new()),
            };
        }
        let conflict = |found| Problem::Conflict {
            path: describe(&path[..depth]),
            found,
            wanted: describe(&path[..=depth]),
        };
        let last = depth + 1 == path.len();
        node = match (step, node) {
            (Step::Key(key), Value::Object(map)) => {
                let slot = map.entry(key.clone()).or_insert(Value::Null);
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            (Step::Index(index), Value::Array(items)) => {
                if items.len() <= *index {
                    items.resize(index + 1, Value::Null);
                }
                let slot = &mut items[*index];
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            (_, other) => return Err(conflict(kind(other))),
        };
    }
    Ok(())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(text: &str) -> Value {
        Value::Object(parse(text).unwrap())
    }

    fn problem(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn commas_separate_assignments_unless_escaped() {
        assert_eq!(values("a=b,c.d=2"), json!({"a": "b", "c": {"d": 2}}));
        assert_eq!(values("a=b\\,c"), json!({"a": "b,c"}));
        assert_eq!(
            values("podAnnotations.example\\.com/x=1"),
            json!({"podAnnotations": {"example.com/x": 1}})
        );
    }

    #[test]
    fn scalars_are_typed_as_helm_types_them() {
        assert_eq!(
            values("t=True,f=false,n=NULL,z=0,i=-7,s=0123,x=1.5,e="),
            json!({"t": true, "f": false, "n": null, "z": 0, "i": -7, "s": "0123", "x": "1.5", "e": ""})
        );
    }

    #[test]
    fn lists_and_indexes_build_lists() {
        assert_eq!(values("a={x,1}"), json!({"a": ["x", 1]}));
        assert_eq!(values("a={}"), json!({"a": []}));
        assert_eq!(values("a[2].b=x"), json!({"a": [null, null, {"b": "x"}]}));
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        assert_eq!(
            problem("a=b,c"),
            "--set \"a=b,c\": key \"c\" has no value (expected KEY=VALUE, e.g. resources.requests.cpu=200m)"
        );
        assert_eq!(
            problem("=1"),
            "--set \"=1\": an empty key (expected KEY=VALUE with a dotted KEY)"
        );
        assert_eq!(
            problem("a..b=1"),
            "--set \"a..b=1\": an empty key after \"a\" (expected KEY=VALUE with a dotted KEY)"
        );
        assert_eq!(
            problem("a[1]"),
            "--set \"a[1]\": key \"a[1]\" has no value (expected KEY=VALUE, e.g. resources.requests.cpu=200m)"
        );
        assert_eq!(
            problem("a=1,a.b=2"),
            "--set \"a=1,a.b=2\": a is a number, so a.b cannot be set"
        );
        assert_eq!(
            problem("a[0]=x,a.b=1"),
            "--set \"a[0]=x,a.b=1\": a is a list, so a.b cannot be set"
        );
        assert_eq!(
            problem("a[x]=1"),
            "--set \"a[x]=1\": list index \"x\" is not a number"
        );
        assert_eq!(
            problem("a={x"),
            "--set \"a={x\": the list is not closed with '}'"
        );
        assert_eq!(
            problem("a={x}y"),
            "--set \"a={x}y\": expected ',' after the list, found 'y'"
        );
        assert!(problem("a[65537]=1").contains("above the largest supported, 65536"));
    }

    #[test]
    fn paths_deeper_than_helms_limit_are_refused() {
        let thirty = vec!["a"; 30].join(".");
        parse(&format!("{thirty}=1")).unwrap();
        let deep = format!("{thirty}[0]=1");
        assert_eq!(
            problem(&deep),
            format!("--set {deep:?}: the path has 31 keys and indexes; at most 30 are supported")
        );
        // Tens of thousands of keys are refused before any value is built from them.
        let huge = format!("{}=1", vec!["a"; 50_000].join("."));
        assert!(
            problem(&huge)
                .ends_with("the path has 50000 keys and indexes; at most 30 are supported")
        );
    }
}
