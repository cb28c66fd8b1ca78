//! The files the generator writes and the hosts read: their types and
//! constants only, so that neither side imports the other.

pub mod backup;
pub mod pairing;
pub mod plan;
