//! Reports of a load run: the JSON contract ([`json`]), HdrHistogram percentile distributions
//! ([`hgrm`]), interval logs ([`hlog`]), the terminal summary ([`text`]) and the HTML page with
//! SVG charts ([`html`]).

pub mod compare;
pub mod csv;
pub mod diff;
pub mod hgrm;
pub mod hlog;
pub mod html;
pub mod json;
pub mod merge;
pub mod text;
