//! The pktvault engine: capture, decoding, segments, index, filters,
//! extraction.

pub mod capture;
pub mod decode;
mod error;
pub mod extract;
pub mod filter;
pub mod index;
pub mod ingest;
pub mod input;
pub mod retention;
pub mod segment;
pub mod status;
pub mod store;
mod write_behind;

pub use error::{Error, Result};
