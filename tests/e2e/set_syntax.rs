//! `smm install --set` against `helm template --set`: the same argument must give the same
//! values, so that what a user has typed into helm for years means the same to smm.

use std::process::Command;

use serde_json::Value;

use crate::support::HelmTool;

/// Arguments on which smm and helm agree: the values, or both refuse.
const AGREED: &[&str] = &[
    "a=b,c=d",
    "a.b=1,a.c=2",
    "a.b=1,a=2",
    "a=b=c",
    "a=b\\,c",
    "a=b\\=c",
    "a=x\\\\y",
    "a\\,b=1",
    "a.b\\.c=x",
    "a.b=c.d",
    "a=",
    "a=b,",
    "a= b",
    "a=x{y}",
    "a=\\{x}",
    "a=[1]",
    // Types: helm's, not YAML's.
    "a=1.5",
    "a=0123",
    "a=0",
    "a=-3",
    "a=+5",
    "a=1e3",
    "a=9999999999999999999",
    "a=TRUE,b=fAlSe,c=Null",
    // Lists and indexes.
    "a={x,y,2}",
    "a={ x , y }",
    "a={x\\,y,z}",
    "a={x},b=1",
    "a[1]=x",
    "a[2]=x,a[0]=y",
    "a[0]=1,a[0]=2",
    "a[0][1]=x",
    "a[0]={x,y}",
    "a[0].b=1,a[1].c=2",
    "a.b[0].c[1]=y",
    "a={1,2},a[3]=z",
    "a.b={x},a.b[1]=z",
    // Refused by both.
    "a",
    "a=b,c",
    ",a=b",
    "a..b=1",
    "a[x]=1",
    "a[-1]=1",
    "a[70000]=1",
    "a={x}y",
    "a=1,a.b=2",
    "a[0]=x,a.b=1",
];

/// What `helm template --set ARG` gives a chart whose only template prints its values.
fn helm_values(chart: &std::path::Path, argument: &str) -> Option<Value> {
    let output = Command::new(HelmTool::Helm4.path())
        .args(["template", "echo"])
        .arg(chart)
        .args(["--set", argument])
        .output()
        .unwrap();
    if !output.status.success() {
        return None;
    }
    let manifest: Value = serde_yaml_ng::from_slice(&output.stdout).unwrap();
    Some(serde_json::from_str(manifest["data"]["values"].as_str().unwrap()).unwrap())
}

#[test]
fn set_arguments_give_the_values_helm_gives() {
    let chart = tempfile::tempdir().unwrap();
    std::fs::write(
        chart.path().join("Chart.yaml"),
        "apiVersion: v2\nname: echo\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::create_dir(chart.path().join("templates")).unwrap();
    std::fs::write(
        chart.path().join("templates/values.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: values\ndata:\n  values: {{ toJson .Values | quote }}\n",
    )
    .unwrap();

    let mut disagreements = Vec::new();
    for argument in AGREED {
        let ours = smm::values::set::parse(argument).ok().map(Value::Object);
        let helms = helm_values(chart.path(), argument);
        if ours != helms {
            disagreements.push(format!("{argument:?}: smm {ours:?}, helm {helms:?}"));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}
