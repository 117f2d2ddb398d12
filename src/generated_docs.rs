//! Sections of the documentation that the code generates (tables of the catalog and of the
//! operator's rights): a test compares each with what the code generates now, so a change to
//! the code cannot leave the documentation behind.

/// Fails unless the section of `file` (relative to the crate) between `<!-- {name}:start -->`
/// and `<!-- {name}:end -->` is `generated`; with `SMM_UPDATE_README` set it rewrites the
/// section instead (`SMM_UPDATE_README=1 cargo test --lib readme`).
pub(crate) fn assert_section_current(file: &str, name: &str, generated: &str) {
    let start_marker = format!("<!-- {name}:start -->\n");
    let end_marker = format!("<!-- {name}:end -->");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let (Some(start), Some(end)) = (text.find(&start_marker), text.find(&end_marker)) else {
        panic!("{file} lacks the {start_marker:?} / {end_marker:?} markers");
    };
    let current = &text[start + start_marker.len()..end];
    if current == generated {
        return;
    }
    if std::env::var_os("SMM_UPDATE_README").is_some() {
        let updated = format!(
            "{}{generated}{}",
            &text[..start + start_marker.len()],
            &text[end..]
        );
        std::fs::write(&path, updated).unwrap();
    } else {
        panic!("{file}'s {name} section is stale; run SMM_UPDATE_README=1 cargo test --lib readme");
    }
}
