//! The sample events of each function, through its real binary: used by the
//! binary tests and by the IAM coverage test, which records what each
//! function asks of AWS.

pub mod activation;
pub mod canary;
pub mod failover;
pub mod hook;
pub mod issuer;
