//! Reports of a load run: the JSON contract ([`json`]), HdrHistogram percentile distributions
//! ([`hgrm`]), interval logs ([`hlog`]), the terminal summary ([`text`]) and the HTML page with
//! SVG charts ([`html`]).

pub mod hgrm;
pub mod hlog;
pub mod html;
pub mod json;
pub mod text;

/// The canonical gRPC status code name for `code` (as grpc-gateway and Envoy print it).
pub fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
}
