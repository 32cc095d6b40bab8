//! `gateway --openapi FILE`: the document of the transcoded routes is valid OpenAPI 3.1 by an
//! independent validator (PyPI's `openapi-spec-validator`; the test says so and skips without
//! it, CI requires it), says what the proto3 JSON mapping says, and tells the truth: every
//! documented operation, called through the gateway in front of the mocks, answers with a
//! documented status and a body its documented schema accepts.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// `gwbench gateway --openapi -` with `args`: the document (and the stderr line).
fn document(args: &[&str]) -> (Value, String) {
    let out = Command::new(cargo_bin("gwbench"))
        .args(["gateway", "--openapi", "-"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (doc, stderr)
}

/// Validates `doc` with openapi-spec-validator; false (said on stderr) when it is not installed
/// and CI does not require it.
fn independently_valid(doc: &Value, tag: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "python3 with openapi-spec-validator is not installed \
                   (pip install openapi-spec-validator)";
        assert!(
            std::env::var_os("GWBENCH_REQUIRE_OPENAPI_VALIDATOR").is_none(),
            "{msg}, and GWBENCH_REQUIRE_OPENAPI_VALIDATOR is set"
        );
        eprintln!("skipped: {msg}");
        return false;
    }
    let dir = gwbench::process::TempDir::new(tag).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys\n\
             from openapi_spec_validator import validate\n\
             from openapi_spec_validator.readers import read_from_filename\n\
             d, _ = read_from_filename(sys.argv[1])\n\
             validate(d)\n\
             print('valid', d['openapi'])",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "valid 3.1.0");
    true
}

/// A proto with what the mapping treats apart: 64-bit integers, enums, maps, well-known types,
/// a body field, a response field, a server stream, HttpBody, a verb, a multi-segment variable,
/// a client stream (WebSocket only) and a rule the gateway cannot serve (skipped).
const FEATURES: &str = r#"
syntax = "proto3";
package feat.v1;
import "google/api/annotations.proto";
import "google/api/httpbody.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

// Shelves of books.
service Library {
  // Reads one shelf.
  rpc GetShelf(GetShelfRequest) returns (Shelf) {
    option (google.api.http) = { get: "/v1/{name=shelves/*}" };
  }
  rpc Rename(RenameRequest) returns (Shelf) {
    option (google.api.http) = { post: "/v1/{name=shelves/*}:rename" body: "shelf" response_body: "title" };
  }
  rpc Watch(GetShelfRequest) returns (stream Shelf) {
    option (google.api.http) = { get: "/v1/watch/{name}" };
  }
  rpc Download(GetShelfRequest) returns (google.api.HttpBody) {
    option (google.api.http) = { get: "/v1/download/{name}" };
  }
  rpc Upload(stream Shelf) returns (Shelf) {
    option (google.api.http) = { post: "/v1/upload" body: "*" };
  }
  rpc Broken(GetShelfRequest) returns (Shelf) {
    option (google.api.http) = { get: "/v1/broken/{no_such_field}" };
  }
}
enum Kind { KIND_UNSPECIFIED = 0; KIND_FICTION = 1; }
message GetShelfRequest {
  string name = 1;
  // How many books at most.
  int64 limit = 2;
  Kind kind = 3;
  google.protobuf.Timestamp since = 4;
  repeated string tags = 5;
  Shelf filter = 6;
}
message RenameRequest { string name = 1; Shelf shelf = 2; }
// A shelf.
message Shelf {
  string name = 1;
  google.protobuf.StringValue title = 2;
  map<string, int64> counts = 3;
  google.protobuf.Struct extra = 4;
  repeated Shelf children = 5;
  uint64 size = 6;
  double ratio = 7;
}
"#;

#[test]
fn the_document_is_valid_openapi_and_says_what_the_mapping_says() {
    let dir = gwbench::process::TempDir::new("openapi-proto").unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let proto = dir.join("feat.proto");
    std::fs::write(&proto, FEATURES).unwrap();
    let (doc, stderr) = document(&["--proto", proto.to_str().unwrap()]);
    // The default config mounts the rules three times (/, /secure, /cached).
    assert!(
        stderr.contains("12 operations") && stderr.contains("3 annotated rules skipped"),
        "{stderr}"
    );
    independently_valid(&doc, "openapi-feat");
    let paths = doc["paths"].as_object().unwrap();
    let keys: Vec<&str> = paths
        .keys()
        .map(String::as_str)
        .filter(|k| !k.starts_with("/secure/") && !k.starts_with("/cached/"))
        .collect();
    assert_eq!(paths.len(), 12);
    assert_eq!(
        keys,
        [
            "/v1/download/{name}",
            "/v1/shelves/{shelf}",
            "/v1/shelves/{shelf}:rename",
            "/v1/watch/{name}",
        ],
        "the skipped rule is not documented"
    );
    assert_eq!(
        doc["x-websocket"][0],
        json!({"path": "/cached/v1/upload", "rpc": "feat.v1.Library.Upload"})
    );
    // The secured mount says so.
    assert_eq!(
        paths["/secure/v1/shelves/{shelf}"]["get"]["security"],
        json!([{"bearerAuth": []}])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    assert!(paths["/v1/shelves/{shelf}"]["get"]["security"].is_null());
    let get = &paths["/v1/shelves/{shelf}"]["get"];
    assert_eq!(get["description"], "Reads one shelf.");
    let params: Vec<&Value> = get["parameters"].as_array().unwrap().iter().collect();
    let param = |name: &str| {
        *params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no parameter {name}: {get}"))
    };
    // name=shelves/*: the variable's segments are the path's, its wildcard a parameter.
    assert_eq!(param("shelf")["in"], "path");
    assert!(
        param("shelf")["description"]
            .as_str()
            .unwrap()
            .contains("`name` (`shelves/*`)")
    );
    assert_eq!(
        param("limit")["schema"],
        json!({"type": "string", "format": "int64"})
    );
    assert_eq!(param("limit")["description"], "How many books at most.");
    assert_eq!(
        param("since")["schema"],
        json!({"type": "string", "format": "date-time"})
    );
    assert_eq!(param("tags")["schema"]["type"], "array");
    assert_eq!(param("filter.title")["schema"], json!({"type": "string"}));
    assert_eq!(param("filter.size")["schema"]["format"], "uint64");
    assert!(
        params.iter().all(|p| p["name"] != "filter.counts"),
        "maps are not query parameters"
    );
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["feat.v1.Kind"],
        json!({"type": "string", "enum": ["KIND_UNSPECIFIED", "KIND_FICTION"]})
    );
    let shelf = &schemas["feat.v1.Shelf"];
    assert_eq!(shelf["description"], "A shelf.");
    assert_eq!(
        shelf["properties"]["counts"],
        json!({"type": "object", "additionalProperties": {"type": "string", "format": "int64"}})
    );
    assert_eq!(shelf["properties"]["extra"]["type"], "object");
    assert_eq!(
        shelf["properties"]["children"]["items"]["$ref"],
        "#/components/schemas/feat.v1.Shelf"
    );
    // body: "shelf" and response_body: "title".
    let rename = &paths["/v1/shelves/{shelf}:rename"]["post"];
    assert_eq!(
        rename["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/feat.v1.Shelf"
    );
    assert_eq!(
        rename["responses"]["200"]["content"]["application/json"]["schema"],
        json!({"type": "string"})
    );
    assert!(
        rename["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["in"] == "path"),
        "a rule with a body field takes the other fields from the query, but here all are bound: {rename}"
    );
    let watch = &paths["/v1/watch/{name}"]["get"]["responses"]["200"]["content"];
    assert!(watch["application/x-ndjson"].is_object(), "{watch}");
    let download = &paths["/v1/download/{name}"]["get"]["responses"]["200"]["content"];
    assert_eq!(download["*/*"]["schema"]["format"], "binary");
}

/// A sample value a schema accepts, for a path parameter or a body.
fn sample(schema: &Value, doc: &Value) -> Value {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return sample(&doc["components"]["schemas"][name], doc);
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    match (schema["type"].as_str(), schema["format"].as_str()) {
        (Some("object"), _) => json!({}),
        (Some("array"), _) => json!([]),
        (Some("integer"), _) => json!(1),
        (Some("boolean"), _) => json!(true),
        (Some("string"), Some("date-time")) => json!("2026-12-05T00:00:00Z"),
        _ => json!("1"),
    }
}

/// Whether `value` fits `schema`, its references resolved in `doc`.
fn fits(schema: &Value, value: &Value, doc: &Value) -> Result<(), String> {
    let mut root = schema.clone();
    let Some(obj) = root.as_object_mut() else {
        return Err(format!("not a schema: {schema}"));
    };
    obj.insert("components".into(), doc["components"].clone());
    let validator = jsonschema::validator_for(&root).map_err(|e| e.to_string())?;
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors.join("; ")),
    }
}

/// Reads a response body: whole, or for a stream its first line (a watch may go on).
async fn first_part(resp: hyper::Response<hyper::body::Incoming>, stream: bool) -> Bytes {
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(data) = frame.data_ref() {
                got.extend_from_slice(data);
                if stream && got.contains(&b'\n') {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    if stream && let Some(end) = got.iter().position(|&b| b == b'\n') {
        got.truncate(end);
    }
    Bytes::from(got)
}

#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    let (doc, _) = document(&[]);
    if independently_valid(&doc, "openapi-default") {
        eprintln!("the default config's document is valid");
    }
    let stack = common::Stack::start(1).await;
    let token = common::dev_token("alice");
    let client = common::client();
    let mut walked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let mut uri = path.clone();
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    let v = sample(&p["schema"], &doc);
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    uri = uri.replace(&format!("{{{}}}", p["name"].as_str().unwrap()), &text);
                }
            }
            let mut req = Request::builder()
                .method(Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap())
                .uri(common::url(stack.gateway.http, &uri));
            if op["security"].is_array() {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            let body = match op["requestBody"]["content"]["application/json"]["schema"].as_object()
            {
                Some(s) => sample(&Value::Object(s.clone()), &doc).to_string(),
                None => String::new(),
            };
            let req = req
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
                .await
                .unwrap_or_else(|_| panic!("{method} {uri}: no answer in 10 s"))
                .unwrap();
            let status = resp.status();
            let responses = &op["responses"];
            let documented = &responses[status.as_str()];
            let spec = match documented.is_object() {
                true => documented,
                false if status != StatusCode::OK => &responses["default"],
                false => panic!("{method} {uri}: 200 is not documented"),
            };
            let content = spec["content"].as_object().unwrap();
            let (media, schema) = content.iter().next().unwrap();
            let stream = media == "application/x-ndjson";
            let got = first_part(resp, stream).await;
            if media != "*/*" {
                let value: Value = serde_json::from_slice(&got).unwrap_or_else(|e| {
                    panic!("{method} {uri} ({status}): not JSON ({e}): {got:?}")
                });
                if let Err(e) = fits(&schema["schema"], &value, &doc) {
                    panic!(
                        "{method} {uri} ({status}) does not fit its documented schema: {e}\n{value}"
                    );
                }
            }
            walked += 1;
        }
    }
    assert!(walked >= 20, "{walked} operations walked");
    stack.stop().await;
}

#[test]
fn a_document_that_cannot_be_written_is_one_line_and_exit_1() {
    let out = Command::new(cargo_bin("gwbench"))
        .args(["gateway", "--openapi"])
        .arg(Path::new("/nonexistent-dir/openapi.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot write /nonexistent-dir/openapi.json"),
        "{stderr}"
    );
}
