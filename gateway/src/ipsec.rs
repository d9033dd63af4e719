//! IPsec on the gateway: IKE runs here on the control plane (`driver.rs`)
//! and installs the child SAs it negotiates into the data plane; the
//! configuration's words become the protocol cores' types in
//! `convert.rs`.

pub mod convert;
pub mod driver;
pub mod keylog;
pub(crate) mod lookup;
pub mod reconcile;
mod retired;
#[cfg(test)]
pub(crate) mod testing;

pub use driver::Ike;
