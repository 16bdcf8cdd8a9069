//! Where presses come from. Every source turns its input into
//! [`Command`](crate::call::driver::Command)s on one channel: `stdin` (each line
//! is a press) and the control socket (`doorbell ring`, `hangup`, `status`).

pub mod control;
pub mod stdin;
