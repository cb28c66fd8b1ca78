//! On the appliance's hosts: what reads the generated files there (the
//! bootstrap plan, the pairing and backup configs), never the spec or the
//! model.

pub mod atomic;
pub mod audit;
pub mod backup;
pub mod bootstrap;
pub mod pairing;
pub mod upgrade;
pub mod warden;
