//! Packet filters: the default (nBPF-compatible) language, its evaluator and
//! index planner, and libpcap mode.
//!
//! The grammar and the meaning of each primitive are documented in
//! `docs/filters.md`.

mod ast;
pub mod bpf;
mod eval;
mod parse;
pub mod plan;

pub use ast::{AddrFamily, Dir, Expr, IpNet, Primitive};
pub use eval::{matches, Truncated};
pub use parse::{parse, FilterError, MAX_FILTER_BYTES, MAX_NESTING_DEPTH, MAX_PRIMITIVES};
