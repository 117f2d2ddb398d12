//! Masking of secret-looking values before they leave the process: the dashboard shows merged
//! values and a plan's values diff to anyone who may read it, `smm reconcile --dry-run` prints
//! the diff into CI logs, and a chart's values can carry passwords and keys.

use serde_json::Value;

use super::ValueChange;

/// What a masked value is shown as.
pub const MASK: &str = "********";

/// Words that mark a key as holding a secret, matched case-insensitively anywhere in the key:
/// `pass` covers password, passwd and htpasswd, `auth` authorization and basicAuth, `key`
/// apiKey and privateKey. Erring on the side of masking: a harmless value hidden costs less
/// than a secret shown.
const SECRET_WORDS: &[&str] = &[
    "pass",
    "pwd",
    "token",
    "secret",
    "auth",
    "key",
    "cert",
    "credential",
    "private",
    "dsn",
    "connectionstring",
];

/// `values` with the value of every secret-looking key replaced by [`MASK`], and the secrets
/// of the shapes charts carry them in: the `value` of an env entry (`{name, value}`) whose name
/// is secret-looking, the password of a URL (`https://user:pass@host`), the value of a
/// secret-looking flag (`--token=…`, or `--token` followed by its value in a list). Booleans
/// and nulls stay (`tls.enableCert: false` reveals nothing and says how the chart is configured).
pub fn mask_secrets(values: &Value) -> Value {
    match values {
        Value::Object(map) => {
            let secret_env_entry = map
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(is_secret_key);
            Value::Object(
                map.iter()
                    .map(|(key, value)| {
                        let masked = if is_secret_key(key) || (secret_env_entry && key == "value") {
                            mask_whole(value)
                        } else {
                            mask_secrets(value)
                        };
                        (key.clone(), masked)
                    })
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(mask_items(items)),
        Value::String(text) => Value::String(mask_text(text)),
        other => other.clone(),
    }
}

/// `change` as a plan shows it: both sides masked whole when its path names a secret, else
/// masked inside. The whole path is searched: it joins the keys above the leaf with separators
/// that are not letters, so a secret word found in it lies within one key.
pub fn mask_change(change: ValueChange) -> ValueChange {
    let secret_path = is_secret_key(&change.path);
    let mask = |value: Option<Value>| {
        value.map(|value| {
            if secret_path {
                mask_whole(&value)
            } else {
                mask_secrets(&value)
            }
        })
    };
    ValueChange {
        old: mask(change.old),
        new: mask(change.new),
        path: change.path,
    }
}

fn mask_whole(value: &Value) -> Value {
    match value {
        Value::Bool(_) | Value::Null => value.clone(),
        _ => Value::from(MASK),
    }
}

/// A list's items masked, and a string that follows a secret-looking flag (`--api-key`) masked
/// whole: it is that flag's value.
fn mask_items(items: &[Value]) -> Vec<Value> {
    let mut after_secret_flag = false;
    items
        .iter()
        .map(|item| {
            let masked = match item.as_str() {
                Some(text) if after_secret_flag && !text.starts_with('-') => Value::from(MASK),
                _ => mask_secrets(item),
            };
            after_secret_flag = item
                .as_str()
                .and_then(|text| text.strip_prefix('-'))
                .is_some_and(|flag| !flag.contains('=') && is_secret_key(flag));
            masked
        })
        .collect()
}

/// A string with the value of a secret-looking `--flag=value` and the password of every URL
/// in it masked.
fn mask_text(text: &str) -> String {
    if let Some((flag, _)) = text.split_once('=')
        && flag.starts_with('-')
        && is_secret_key(flag)
    {
        return format!("{flag}={MASK}");
    }
    let mut masked = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme_end + 3);
        masked.push_str(head);
        let authority_end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority
            .rsplit_once('@')
            .and_then(|(userinfo, host)| Some((userinfo.split_once(':')?.0, host)))
        {
            Some((user, host)) => masked.push_str(&format!("{user}:{MASK}@{host}")),
            None => masked.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    masked.push_str(rest);
    masked
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| key.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_looking_keys_are_masked_at_any_depth() {
        let values = json!({
            "grafana": {"adminPassword": "hunter2", "adminUser": "admin"},
            "tls": {"cert": "-----BEGIN", "privateKey": {"pem": "x"}, "enableCerts": true},
            "env": [{"name": "API_TOKEN", "apiToken": "abc"}],
            "replicas": 1,
            "secretName": null
        });
        let masked = mask_secrets(&values);
        assert_eq!(
            masked,
            json!({
                "grafana": {"adminPassword": MASK, "adminUser": "admin"},
                "tls": {"cert": MASK, "privateKey": MASK, "enableCerts": true},
                "env": [{"name": "API_TOKEN", "apiToken": MASK}],
                "replicas": 1,
                "secretName": null
            })
        );
    }

    #[test]
    fn the_usual_secret_shapes_are_masked() {
        let values = json!({
            "env": [
                {"name": "GF_SECURITY_ADMIN_PASSWORD", "value": "hunter2"},
                {"name": "GF_SERVER_ROOT_URL", "value": "http://grafana"}
            ],
            "remoteWrite": {"url": "https://writer:hunter2@metrics.example/api?x=1"},
            "links": ["see https://a:b@c.example/ and https://plain.example/"],
            "args": ["--token=hunter2", "--verbose", "--api-key", "hunter2", "--port=80"],
            "basicAuth": {"username": "u"},
            "pwd": "hunter2", "pass": "hunter2", "dsn": "postgres://x", "connectionString": "s",
            "htpasswd": "h", "authorization": "Bearer x"
        });
        assert_eq!(
            mask_secrets(&values),
            json!({
                "env": [
                    {"name": "GF_SECURITY_ADMIN_PASSWORD", "value": MASK},
                    {"name": "GF_SERVER_ROOT_URL", "value": "http://grafana"}
                ],
                "remoteWrite": {"url": format!("https://writer:{MASK}@metrics.example/api?x=1")},
                "links": [format!("see https://a:{MASK}@c.example/ and https://plain.example/")],
                "args": [format!("--token={MASK}"), "--verbose", "--api-key", MASK, "--port=80"],
                "basicAuth": MASK,
                "pwd": MASK, "pass": MASK, "dsn": MASK, "connectionString": MASK,
                "htpasswd": MASK, "authorization": MASK
            })
        );
    }

    /// A plan's diff of a rotated password shows neither password, whether the secret-looking
    /// key is the leaf, an ancestor, or inside a changed list.
    #[test]
    fn a_changed_password_is_masked_in_the_plan_diff() {
        let old = json!({
            "grafana": {"adminPassword": "old-pw", "auth": {"user": "u", "word": "old-pw"}},
            "env": [{"name": "DB_PASSWORD", "value": "old-pw"}],
            "replicas": 1
        });
        let new = json!({
            "grafana": {"adminPassword": "new-pw", "auth": {"user": "u", "word": "new-pw"}},
            "env": [{"name": "DB_PASSWORD", "value": "new-pw"}],
            "replicas": 2
        });
        let shown: Vec<String> = crate::values::diff(&old, &new)
            .into_iter()
            .map(mask_change)
            .map(|change| change.to_string())
            .collect();
        assert_eq!(
            shown,
            [
                format!(
                    "~ env: [{{\"name\":\"DB_PASSWORD\",\"value\":\"{MASK}\"}}] -> [{{\"name\":\"DB_PASSWORD\",\"value\":\"{MASK}\"}}]"
                ),
                format!("~ grafana.adminPassword: \"{MASK}\" -> \"{MASK}\""),
                format!("~ grafana.auth.word: \"{MASK}\" -> \"{MASK}\""),
                "~ replicas: 1 -> 2".to_owned(),
            ]
        );
    }
}
