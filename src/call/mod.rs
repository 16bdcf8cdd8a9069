//! The call: a pure state machine and the driver that carries out its actions.

pub mod driver;
pub mod machine;
pub mod session;
