//! gRPC status ⇄ HTTP status, as grpc-gateway v2 and Envoy map them, and the one place that
//! turns an error into the JSON error response `{"error": {"code", "message", "http_status"}}`.

use http::{HeaderValue, Response, StatusCode};
use tonic::Code;

use super::GwBody;
use super::config::ErrorFormat;
use crate::net;

/// The HTTP status for a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // 499 Client Closed Request (nginx's): not a registered status, but a valid code.
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status code"),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
    }
}

/// The canonical name of a gRPC code (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    crate::grpc::code_name(code as i32)
}

/// A gateway error on its way to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GwError {
    /// HTTP status.
    pub status: StatusCode,
    /// gRPC code name.
    pub code: &'static str,
    /// A sentence for the client.
    pub message: String,
    /// `Allow` header for 405.
    pub allow: Option<String>,
    /// Typed details from the upstream (google.rpc.Status `details`, as JSON).
    pub details: Vec<serde_json::Value>,
}

impl GwError {
    /// An error with the gRPC code's HTTP status.
    pub fn grpc(code: Code, message: impl Into<String>) -> Self {
        GwError {
            status: http_status(code),
            code: code_name(code),
            message: message.into(),
            allow: None,
            details: Vec::new(),
        }
    }

    /// An error with an explicit HTTP status (e.g. 413, 405) and the closest gRPC code.
    pub fn http(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        GwError {
            status,
            code: code_name(code),
            message: message.into(),
            allow: None,
            details: Vec::new(),
        }
    }

    /// With the upstream's typed details.
    pub fn with_details(mut self, details: Vec<serde_json::Value>) -> Self {
        self.details = details;
        self
    }

    /// The JSON error response, in the gateway's shape.
    pub fn into_response(self) -> Response<GwBody> {
        self.into_response_as(ErrorFormat::Gwbench)
    }

    /// The error as one element of a streamed answer, `{"error": ...}`: the gateway's shape
    /// as it is, google.rpc.Status JSON under `error` (as grpc-gateway writes a stream's error).
    pub fn in_band(&self, format: ErrorFormat) -> serde_json::Value {
        let inner = match format {
            ErrorFormat::Gwbench => serde_json::json!({
                "code": self.code, "message": self.message,
                "http_status": self.status.as_u16(), "details": self.details,
            }),
            ErrorFormat::Google => serde_json::json!({
                "code": crate::grpc::code_number(self.code),
                "message": self.message,
                "details": self.details,
            }),
        };
        serde_json::json!({ "error": inner })
    }

    /// The JSON error response in `format`.
    pub fn into_response_as(self, format: ErrorFormat) -> Response<GwBody> {
        let body = match (format, self.details.is_empty()) {
            (ErrorFormat::Gwbench, true) => None,
            (ErrorFormat::Gwbench, false) => Some(serde_json::json!({"error": {
                "code": self.code, "message": self.message,
                "http_status": self.status.as_u16(), "details": self.details,
            }})),
            (ErrorFormat::Google, _) => Some(serde_json::json!({
                "code": crate::grpc::code_number(self.code),
                "message": self.message,
                "details": self.details,
            })),
        };
        let mut resp = match body {
            None => net::json_error(self.status, self.code, &self.message),
            Some(b) => net::json(self.status, b.to_string()),
        }
        .map(GwBody::Left);
        if let Some(allow) = self.allow
            && let Ok(v) = HeaderValue::from_str(&allow)
        {
            resp.headers_mut().insert(http::header::ALLOW, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_matches_grpc_gateway() {
        for (code, status) in [
            (Code::Ok, 200),
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::Internal, 500),
            (Code::DataLoss, 500),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ] {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
    }
}
