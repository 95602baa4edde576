//! TLS (feature `tls`): rustls with ring, like the crate's other stores. A URL asks for it
//! with `sslmode=require`, `verify-ca` or `verify-full`; all three verify the server's
//! certificate chain *and* its name (rustls' WebPKI verifier), against the root given to
//! `ClientBuilder::tls_root_certificate`, else the platform's roots. `disable`, `prefer`
//! (the driver's default) and `allow` connect without TLS: leasehold never encrypts on a
//! guess that it could not also verify.

use std::pin::Pin;

use futures::Stream;
use tokio_postgres::{AsyncMessage, Client, Socket};

use crate::{Error, Result};

/// How connections are made: plain, or through rustls.
#[derive(Clone)]
pub(crate) enum Tls {
    Off,
    #[cfg(feature = "tls")]
    On(tokio_postgres_rustls::MakeRustlsConnect),
}

/// A connection's messages (notifications, notices); polling them drives its I/O.
pub(crate) type Messages =
    Pin<Box<dyn Stream<Item = std::result::Result<AsyncMessage, tokio_postgres::Error>> + Send>>;

impl Tls {
    /// The connector for a URL that does (`tls`) or does not ask for TLS, trusting
    /// `root` (PEM) or the platform's roots.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`]: TLS asked for in a build without the `tls` feature, or
    /// a root certificate that is not PEM.
    pub(crate) fn new(tls: bool, root: Option<&[u8]>) -> Result<Tls> {
        if !tls {
            return Ok(Tls::Off);
        }
        #[cfg(feature = "tls")]
        {
            Ok(Tls::On(rustls_connector(root)?))
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = root;
            Err(Error::InvalidArgument(
                "url: sslmode=require/verify-ca/verify-full needs leasehold's `tls` feature".into(),
            ))
        }
    }

    /// A connection to `config`, and its messages.
    pub(crate) async fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> std::result::Result<(Client, Messages), tokio_postgres::Error> {
        match self {
            Tls::Off => {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                Ok((client, messages(connection)))
            }
            #[cfg(feature = "tls")]
            Tls::On(make) => {
                let (client, connection) = config.connect(make.clone()).await?;
                Ok((client, messages(connection)))
            }
        }
    }
}

fn messages<T>(mut connection: tokio_postgres::Connection<Socket, T>) -> Messages
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(futures::stream::poll_fn(move |cx| {
        connection.poll_message(cx)
    }))
}

#[cfg(feature = "tls")]
fn rustls_connector(root: Option<&[u8]>) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(pem) => {
            let mut any = false;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|_| invalid_root())?;
                roots.add(cert).map_err(|_| invalid_root())?;
                any = true;
            }
            if !any {
                return Err(invalid_root());
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidArgument(format!("tls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(feature = "tls")]
fn invalid_root() -> Error {
    Error::InvalidArgument("tls_root_certificate: not a PEM certificate".into())
}

#[cfg(test)]
mod tests {
    use super::Tls;

    #[test]
    fn tls_is_off_unless_asked_and_needs_the_feature() {
        assert!(matches!(Tls::new(false, None), Ok(Tls::Off)));
        let on = Tls::new(true, None);
        #[cfg(feature = "tls")]
        assert!(matches!(on, Ok(Tls::On(_))));
        #[cfg(not(feature = "tls"))]
        assert!(on.err().unwrap().is_invalid_argument());
    }
}
