//! A ControlPlane read from a YAML document a user wrote (`smm reconcile -f FILE`): checked to
//! be one before it is parsed as one, so a wrong file says what it is instead of failing on
//! its first unknown field.

use super::{ControlPlane, DEFAULT_CONTROL_PLANE, GROUP};

/// Why a document is not a ControlPlane; `source` names where it came from (a path, `<stdin>`).
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("{source_name}: not valid YAML: {error}")]
    Yaml {
        source_name: String,
        #[source]
        error: serde_yaml_ng::Error,
    },
    #[error(
        "{source_name}: expected apiVersion: {expected} and kind: ControlPlane, found apiVersion: \
         {api_version:?} and kind: {kind:?}"
    )]
    NotAControlPlane {
        source_name: String,
        expected: String,
        api_version: String,
        kind: String,
    },
    #[error("{source_name}: not a valid ControlPlane: {error}")]
    Invalid {
        source_name: String,
        #[source]
        error: serde_yaml_ng::Error,
    },
}

impl ControlPlane {
    /// Parses `text`, read from `source_name`: the document must say it is a ControlPlane of
    /// this API version; errors carry the field path and line from the parser. A ControlPlane
    /// without a name gets the default one.
    pub fn from_yaml(source_name: &str, text: &str) -> Result<Self, DocumentError> {
        let document: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|error| DocumentError::Yaml {
                source_name: source_name.to_owned(),
                error,
            })?;
        let expected = format!("{GROUP}/v1alpha1");
        let field = |name: &str| {
            let value = document.get(name).and_then(|v| v.as_str());
            value.unwrap_or_default().to_owned()
        };
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        if api_version != expected || kind != "ControlPlane" {
            return Err(DocumentError::NotAControlPlane {
                source_name: source_name.to_owned(),
                expected,
                api_version,
                kind,
            });
        }
        // Parsed again as the typed resource, so errors carry the field path and line.
        let mut control_plane: ControlPlane =
            serde_yaml_ng::from_str(text).map_err(|error| DocumentError::Invalid {
                source_name: source_name.to_owned(),
                error,
            })?;
        if control_plane.metadata.name.is_none() {
            control_plane.metadata.name = Some(DEFAULT_CONTROL_PLANE.to_owned());
        }
        Ok(control_plane)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_must_say_it_is_a_control_plane() {
        let err =
            ControlPlane::from_yaml("cp.yaml", "apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cp.yaml: expected apiVersion: smm.dev/v1alpha1 and kind: ControlPlane, found \
             apiVersion: \"v1\" and kind: \"ConfigMap\""
        );
        let err = ControlPlane::from_yaml("cp.yaml", "a: [").unwrap_err();
        assert!(
            err.to_string().starts_with("cp.yaml: not valid YAML: "),
            "{err}"
        );
    }

    #[test]
    fn fields_are_checked_and_the_name_defaults() {
        let header = "apiVersion: smm.dev/v1alpha1\nkind: ControlPlane\nmetadata: {}\n";
        let err = ControlPlane::from_yaml("cp.yaml", &format!("{header}spec:\n  revison: x\n"))
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("cp.yaml: not a valid ControlPlane: spec: unknown field `revison`"),
            "{message}"
        );
        let parsed = ControlPlane::from_yaml("cp.yaml", &format!("{header}spec: {{}}\n")).unwrap();
        assert_eq!(parsed.metadata.name.as_deref(), Some(DEFAULT_CONTROL_PLANE));
    }
}
