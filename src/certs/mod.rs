//! Frontend certificates: reading a certificate chain and its key from PEM files, what a
//! certificate says about itself (its DNS names, its expiry), and choosing one of several
//! by the client's SNI. Kept apart from `proxy` and `config` so that `fulcrum check` (in
//! `config`) and the TLS acceptor (in `proxy`) read certificates the same way.

mod info;
mod load;
mod sni;

pub use info::{CertInfo, InfoError};
pub use load::{Loaded, TlsError, load_pair};
pub use sni::SniResolver;
