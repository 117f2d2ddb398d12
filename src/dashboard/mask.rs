//! Masking of secret-looking values before they leave the process: the dashboard shows merged
//! values to anyone who may read it, and a chart's values can carry passwords and keys.

use serde_json::Value;

/// What a masked value is shown as.
pub const MASK: &str = "********";

/// Words that mark a key as holding a secret, matched case-insensitively anywhere in the key
/// (`adminPassword`, `tlsCert`, `apiKey`, `clientSecret`, ...). Erring on the side of masking:
/// a harmless value hidden costs less than a secret shown.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "token",
    "secret",
    "key",
    "cert",
    "credential",
    "private",
];

/// `values` with the value of every secret-looking key replaced by [`MASK`]. Booleans and nulls
/// stay (`tls.enableCert: false` reveals nothing and says how the chart is configured).
pub fn mask_secrets(values: &Value) -> Value {
    match values {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let masked =
                        if is_secret_key(key) && !matches!(value, Value::Bool(_) | Value::Null) {
                            Value::from(MASK)
                        } else {
                            mask_secrets(value)
                        };
                    (key.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask_secrets).collect()),
        other => other.clone(),
    }
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
}
