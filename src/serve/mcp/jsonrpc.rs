//! JSON-RPC 2.0 as MCP's stdio transport carries it: one message a line, UTF-8 JSON with no
//! newline inside. Pure: a line in, a message (or the error answer it deserves) out.
//! Batches (JSON arrays) are refused: MCP dropped them from the protocol.

use serde_json::{json, Value};

/// The line is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON, but not a JSON-RPC 2.0 request or notification.
pub const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// The method's params are malformed (or name no such tool).
pub const INVALID_PARAMS: i64 = -32602;
/// The server failed.
pub const INTERNAL_ERROR: i64 = -32603;

/// One message from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call that wants an answer with the same `id`.
    Request {
        /// Its id (a string or a number), echoed in the answer.
        id: Value,
        /// The method.
        method: String,
        /// Its params (`null` when absent).
        params: Value,
    },
    /// A call that wants no answer.
    Notification {
        /// The method.
        method: String,
        /// Its params (`null` when absent).
        params: Value,
    },
    /// An answer to a request of ours (this server sends none, so it is ignored).
    Response,
    /// Not a message: the error answer to send back.
    Invalid(Value),
}

/// Reads one line.
pub fn parse(line: &str) -> Message {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Message::Invalid(error(&Value::Null, PARSE_ERROR, &format!("{e}"))),
    };
    let Value::Object(mut o) = v else {
        return Message::Invalid(error(
            &Value::Null,
            INVALID_REQUEST,
            "a message is one JSON object (batches are not part of MCP)",
        ));
    };
    let id = o.remove("id");
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        let id = id.unwrap_or(Value::Null);
        return Message::Invalid(error(&id, INVALID_REQUEST, "jsonrpc: must be \"2.0\""));
    }
    let method = match o.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => {
            let id = id.unwrap_or(Value::Null);
            return Message::Invalid(error(&id, INVALID_REQUEST, "method: must be a string"));
        }
        None if o.contains_key("result") || o.contains_key("error") => return Message::Response,
        None => {
            let id = id.unwrap_or(Value::Null);
            return Message::Invalid(error(&id, INVALID_REQUEST, "method: required"));
        }
    };
    let params = o.remove("params").unwrap_or(Value::Null);
    if !matches!(params, Value::Null | Value::Object(_) | Value::Array(_)) {
        let id = id.unwrap_or(Value::Null);
        return Message::Invalid(error(&id, INVALID_REQUEST, "params: must be an object"));
    }
    match id {
        None => Message::Notification { method, params },
        Some(id @ (Value::String(_) | Value::Number(_))) => Message::Request { id, method, params },
        Some(_) => Message::Invalid(error(
            &Value::Null,
            INVALID_REQUEST,
            "id: must be a string or a number",
        )),
    }
}

/// The answer to request `id`.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// The error answer to request `id` (`null` when it could not be read), the message on one
/// line.
pub fn error(id: &Value, code: i64, message: &str) -> Value {
    let message = message.replace(['\n', '\r'], " ");
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(m: &Message) -> Option<i64> {
        match m {
            Message::Invalid(v) => v["error"]["code"].as_i64(),
            _ => None,
        }
    }

    #[test]
    fn requests_and_notifications_are_told_apart_by_their_id() {
        let r = parse(r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#);
        assert_eq!(
            r,
            Message::Request {
                id: json!(7),
                method: "tools/list".into(),
                params: Value::Null
            }
        );
        let n = parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(
            n,
            Message::Notification {
                method: "notifications/initialized".into(),
                params: Value::Null
            }
        );
        let s = parse(r#"{"jsonrpc":"2.0","id":"a","method":"x","params":{"k":1}}"#);
        assert!(
            matches!(s, Message::Request { id: Value::String(ref a), ref params, .. }
            if a == "a" && params["k"] == 1)
        );
        let answer = parse(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        assert_eq!(answer, Message::Response);
    }

    #[test]
    fn malformed_messages_get_the_errors_json_rpc_names() {
        let cases = [
            ("not json", PARSE_ERROR),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                INVALID_REQUEST,
            ),
            (r#"{"id":1,"method":"ping"}"#, INVALID_REQUEST),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                INVALID_REQUEST,
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":1,"method":3}"#, INVALID_REQUEST),
            (
                r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
                INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":5}"#,
                INVALID_REQUEST,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(code(&parse(line)), Some(want), "{line}");
        }
        // The id is echoed when it could be read.
        let Message::Invalid(v) = parse(r#"{"jsonrpc":"1.0","id":9,"method":"ping"}"#) else {
            panic!("invalid")
        };
        assert_eq!(v["id"], 9);
    }

    #[test]
    fn an_error_message_is_one_line() {
        let v = error(&json!(1), INTERNAL_ERROR, "a\nb\r\nc");
        assert_eq!(v["error"]["message"], "a b  c");
        assert_eq!(v["jsonrpc"], "2.0");
    }
}
