//! TLS to the signaling server: whom to trust, and why a certificate was not
//! trusted, in words an owner can act on.
//!
//! Three ways to trust, chosen in the config (`docs/config.md`):
//! - the system's certificate authorities, plus `signaling.ca_file` when set,
//!   with the host name or address checked (the default);
//! - `signaling.pin_sha256`: exactly the certificate(s) with these SHA-256
//!   fingerprints, nothing else. This is how the original design's server is
//!   trusted: its certificate is made with `openssl req -x509` and the
//!   server's address typed as the common name, with no subjectAltName, so no
//!   name check can ever pass for it. The TLS handshake proves the server
//!   holds the certificate's key; the pin is checked right after it, before a
//!   single byte of the request is written;
//! - `signaling.insecure_skip_verify`: anyone (logged as a warning).
//!
//! When verification fails, a second handshake that trusts anything fetches
//! the certificate (and is closed at once, nothing sent) so the error can say
//! what is wrong with it (expired, self-signed, issued for another name,
//! unknown authority) and what to do, fingerprint included.
//! `doorbell check` prints the same.

use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_native_tls::TlsStream;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the config says to trust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustSettings {
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprints of the certificate(s) to trust, as written in the
    /// config (hex, with or without colons).
    pub pin_sha256: Vec<String>,
    pub insecure_skip_verify: bool,
}

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Reads `AB:CD:...` (what `openssl x509 -fingerprint -sha256` prints) or
    /// 64 hex digits, optionally after `sha256:` / `SHA256=`.
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let t = text.trim();
        let t = t
            .strip_prefix("sha256:")
            .or_else(|| t.strip_prefix("SHA256:"))
            .or_else(|| t.strip_prefix("sha256 Fingerprint="))
            .or_else(|| t.strip_prefix("SHA256 Fingerprint="))
            .or_else(|| t.strip_prefix("SHA256="))
            .unwrap_or(t);
        let hex: String = t.chars().filter(|c| *c != ':' && *c != ' ').collect();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "{text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed, as `openssl x509 -noout -fingerprint -sha256` prints)"
            ));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex digits");
        }
        Ok(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What was wrong with the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertProblem {
    /// Issued for other names than the one in `signaling.url`.
    NameMismatch,
    /// Self-signed and not trusted.
    SelfSigned,
    /// Issued by an authority this system does not trust.
    UnknownAuthority,
    Expired,
    NotYetValid,
    /// Not the pinned certificate.
    PinMismatch,
    /// Another verification failure, in OpenSSL's words.
    Other(String),
}

impl CertProblem {
    /// Reads the verification result OpenSSL put in the handshake error.
    fn from_openssl(message: &str) -> Option<CertProblem> {
        let m = message.to_ascii_lowercase();
        let p = if m.contains("certificate has expired") {
            CertProblem::Expired
        } else if m.contains("not yet valid") {
            CertProblem::NotYetValid
        } else if m.contains("hostname mismatch") || m.contains("ip address mismatch") {
            CertProblem::NameMismatch
        } else if m.contains("self-signed certificate in certificate chain")
            || m.contains("self signed certificate in certificate chain")
            || m.contains("unable to get local issuer certificate")
            || m.contains("unable to get issuer certificate")
            || m.contains("unable to verify the first certificate")
        {
            CertProblem::UnknownAuthority
        } else if m.contains("self-signed certificate") || m.contains("self signed certificate") {
            CertProblem::SelfSigned
        } else if m.contains("certificate verify failed") {
            let reason = message
                .rsplit_once('(')
                .map(|(_, r)| r.trim_end_matches(')').to_string())
                .unwrap_or_else(|| "verification failed".into());
            CertProblem::Other(reason)
        } else {
            return None;
        };
        Some(p)
    }
}

/// The facts about a certificate that explain a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub fingerprint: Fingerprint,
    pub common_name: Option<String>,
    /// subjectAltName entries: DNS names and IP addresses.
    pub alt_names: Vec<String>,
    pub issuer: String,
    pub self_signed: bool,
    pub not_after: String,
    pub expired: bool,
    pub not_yet_valid: bool,
}

impl CertSummary {
    pub fn from_der(der: &[u8]) -> Option<CertSummary> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let mut alt_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => alt_names.push(d.to_string()),
                    GeneralName::IPAddress(bytes) => {
                        if let Ok(b) = <[u8; 4]>::try_from(*bytes) {
                            alt_names.push(std::net::Ipv4Addr::from(b).to_string());
                        } else if let Ok(b) = <[u8; 16]>::try_from(*bytes) {
                            alt_names.push(std::net::Ipv6Addr::from(b).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        let now = ASN1Time::now();
        let validity = cert.validity();
        Some(CertSummary {
            fingerprint: Fingerprint::of(der),
            common_name,
            alt_names,
            issuer: cert.issuer().to_string(),
            self_signed: cert.issuer().as_raw() == cert.subject().as_raw(),
            not_after: validity.not_after.to_string(),
            expired: validity.not_after < now,
            not_yet_valid: validity.not_before > now,
        })
    }

    /// What a name check against `host` would say (no common-name fallback:
    /// TLS clients ignore the common name when checking names).
    pub fn matches_host(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.alt_names.iter().any(|n| {
            if let Some(suffix) = n.strip_prefix("*.") {
                host.split_once('.')
                    .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(suffix))
            } else {
                n.eq_ignore_ascii_case(host)
            }
        })
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.common_name {
            Some(cn) => parts.push(format!("CN={cn}")),
            None => parts.push("no common name".into()),
        }
        if self.alt_names.is_empty() {
            parts.push("no subjectAltName".into());
        } else {
            parts.push(format!("subjectAltName {}", self.alt_names.join(", ")));
        }
        if self.self_signed {
            parts.push("self-signed".into());
        } else {
            parts.push(format!("issued by {}", self.issuer));
        }
        parts.push(format!(
            "{} {}",
            if self.expired {
                "expired"
            } else {
                "valid until"
            },
            self.not_after
        ));
        parts.push(format!("SHA-256 {}", self.fingerprint));
        parts.join(", ")
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("signaling TLS settings: {0}")]
    Setup(String),
    #[error("{}", untrusted_message(.server, .problem, .certificate.as_deref()))]
    Untrusted {
        server: String,
        problem: CertProblem,
        certificate: Option<Box<CertSummary>>,
    },
    #[error("TLS handshake with {server} failed: {message}")]
    Handshake { server: String, message: String },
    #[error("TLS handshake with {server} took more than {} s", HANDSHAKE_TIMEOUT.as_secs())]
    Timeout { server: String },
}

fn untrusted_message(server: &str, problem: &CertProblem, cert: Option<&CertSummary>) -> String {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    let pin_hint = |c: &CertSummary| {
        format!(
            "signaling.pin_sha256 = \"{}\" trusts exactly this certificate (first compare it with `openssl x509 -in cert.pem -noout -fingerprint -sha256` on the server)",
            c.fingerprint
        )
    };
    let (cause, fix) = match (problem, cert) {
        (CertProblem::PinMismatch, Some(c)) => (
            format!("its SHA-256 fingerprint {} is not pinned in signaling.pin_sha256", c.fingerprint),
            "the server has a new certificate, or someone is in between: check the fingerprint on the server and update the pin only if it matches".to_string(),
        ),
        (CertProblem::PinMismatch, None) => (
            "it is not the pinned certificate (signaling.pin_sha256)".to_string(),
            "check the fingerprint on the server".to_string(),
        ),
        (CertProblem::Expired, Some(c)) => (
            format!("it expired on {}", c.not_after),
            "renew the server's certificate".to_string(),
        ),
        (CertProblem::Expired, None) => ("it has expired".into(), "renew the server's certificate".into()),
        (CertProblem::NotYetValid, _) => (
            "it is not valid yet".to_string(),
            "check the clock of this machine and of the server".to_string(),
        ),
        (CertProblem::NameMismatch, Some(c)) if c.alt_names.is_empty() => (
            format!(
                "it names the server only in its common name ({}), which TLS no longer accepts when checking {host}",
                c.common_name.as_deref().unwrap_or("none")
            ),
            format!(
                "{}; or give the server a certificate with a subjectAltName (docs/install.md)",
                pin_hint(c)
            ),
        ),
        (CertProblem::NameMismatch, Some(c)) => (
            format!("it is for {}, not {host}", c.alt_names.join(", ")),
            "use one of those names in signaling.url, or give the server a certificate for this name".to_string(),
        ),
        (CertProblem::NameMismatch, None) => (
            format!("it is not issued for {host}"),
            "use the name the certificate is for in signaling.url".to_string(),
        ),
        (CertProblem::SelfSigned, Some(c)) => (
            "it is self-signed".to_string(),
            format!(
                "set signaling.ca_file to a copy of it (when it names {host} in its subjectAltName), or {}",
                pin_hint(c)
            ),
        ),
        (CertProblem::SelfSigned, None) => (
            "it is self-signed".to_string(),
            "set signaling.ca_file to a copy of it, or pin it with signaling.pin_sha256".to_string(),
        ),
        (CertProblem::UnknownAuthority, Some(c)) => (
            format!("it is issued by {}, which this machine does not trust", c.issuer),
            "set signaling.ca_file to that authority's certificate".to_string(),
        ),
        (CertProblem::UnknownAuthority, None) => (
            "it is issued by an authority this machine does not trust".to_string(),
            "set signaling.ca_file to that authority's certificate".to_string(),
        ),
        (CertProblem::Other(why), _) => (why.clone(), "see docs/install.md, \"Trusting the signaling server\"".to_string()),
    };
    let details = cert
        .map(|c| format!(" [certificate: {}]", c.describe()))
        .unwrap_or_default();
    format!("the TLS certificate of {server} is not trusted: {cause}. Fix: {fix}.{details}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Verify,
    Pinned(Vec<Fingerprint>),
    Insecure,
}

/// How this doorbell makes TLS connections to the signaling server.
#[derive(Clone)]
pub struct Tls {
    mode: Mode,
    /// Verifies (Verify mode) or accepts anything (the other modes, which
    /// check for themselves).
    connector: tokio_native_tls::TlsConnector,
    /// Accepts anything; only used to fetch a refused certificate.
    inspector: tokio_native_tls::TlsConnector,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("mode", &self.mode).finish()
    }
}

/// Reads `ca_file` as PEM (one or more certificates).
fn read_ca(path: &Path) -> Result<Vec<native_tls::Certificate>, TlsError> {
    let pem = std::fs::read(path)
        .map_err(|e| TlsError::Setup(format!("cannot read ca_file {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&pem);
    let mut certs = Vec::new();
    for block in text.split_inclusive("-----END CERTIFICATE-----") {
        if let Some(start) = block.find("-----BEGIN CERTIFICATE-----") {
            let one = &block[start..];
            certs.push(
                native_tls::Certificate::from_pem(one.as_bytes()).map_err(|e| {
                    TlsError::Setup(format!(
                        "ca_file {} holds a broken certificate: {e}",
                        path.display()
                    ))
                })?,
            );
        }
    }
    if certs.is_empty() {
        return Err(TlsError::Setup(format!(
            "ca_file {} is not a PEM certificate (no -----BEGIN CERTIFICATE----- block)",
            path.display()
        )));
    }
    Ok(certs)
}

fn accept_anything() -> Result<tokio_native_tls::TlsConnector, TlsError> {
    native_tls::TlsConnector::builder()
        .danger_accept_invalid_certs(true)
        .danger_accept_invalid_hostnames(true)
        .build()
        .map(Into::into)
        .map_err(|e| TlsError::Setup(e.to_string()))
}

impl Tls {
    pub fn new(settings: &TrustSettings) -> Result<Tls, TlsError> {
        let contradiction = |what: &str| {
            TlsError::Setup(format!(
                "signaling.pin_sha256 cannot be combined with {what}: a pin already says exactly which certificate to trust"
            ))
        };
        let mode = if !settings.pin_sha256.is_empty() {
            if settings.insecure_skip_verify {
                return Err(contradiction("signaling.insecure_skip_verify"));
            }
            if settings.ca_file.is_some() {
                return Err(contradiction("signaling.ca_file"));
            }
            let pins = settings
                .pin_sha256
                .iter()
                .map(|p| Fingerprint::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(TlsError::Setup)?;
            Mode::Pinned(pins)
        } else if settings.insecure_skip_verify {
            Mode::Insecure
        } else {
            Mode::Verify
        };
        let connector = if mode == Mode::Verify {
            let mut b = native_tls::TlsConnector::builder();
            if let Some(path) = &settings.ca_file {
                for cert in read_ca(path)? {
                    b.add_root_certificate(cert);
                }
            }
            b.build()
                .map(Into::into)
                .map_err(|e| TlsError::Setup(e.to_string()))?
        } else {
            accept_anything()?
        };
        Ok(Tls {
            mode,
            connector,
            inspector: accept_anything()?,
        })
    }

    /// What trust is in force, for the log.
    pub fn describe(&self) -> String {
        match &self.mode {
            Mode::Verify => "certificate verified".into(),
            Mode::Pinned(p) if p.len() == 1 => format!("certificate pinned (SHA-256 {})", p[0]),
            Mode::Pinned(p) => format!("certificate pinned ({} fingerprints)", p.len()),
            Mode::Insecure => "certificate NOT verified (insecure_skip_verify)".into(),
        }
    }

    pub fn is_insecure(&self) -> bool {
        self.mode == Mode::Insecure
    }

    /// Runs the handshake on `tcp` for `host` and applies the trust rules.
    /// `server` (`host:port`) names the server in errors.
    pub async fn connect(
        &self,
        host: &str,
        server: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, TlsError> {
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.connector.connect(host, tcp))
            .await
            .map_err(|_| TlsError::Timeout {
                server: server.to_string(),
            })?;
        let stream = match handshake {
            Ok(s) => s,
            Err(e) => {
                let message = e.to_string();
                return Err(match CertProblem::from_openssl(&message) {
                    Some(problem) => TlsError::Untrusted {
                        server: server.to_string(),
                        certificate: self.inspect(host, server).await.map(Box::new),
                        problem,
                    },
                    None => TlsError::Handshake {
                        server: server.to_string(),
                        message,
                    },
                });
            }
        };
        if let Mode::Pinned(pins) = &self.mode {
            let der = peer_der(&stream);
            let summary = der.as_deref().and_then(CertSummary::from_der);
            let fingerprint = der.as_deref().map(Fingerprint::of);
            if !fingerprint.is_some_and(|f| pins.contains(&f)) {
                return Err(TlsError::Untrusted {
                    server: server.to_string(),
                    problem: CertProblem::PinMismatch,
                    certificate: summary.map(Box::new),
                });
            }
            if let Some(s) = summary.as_ref().filter(|s| s.expired) {
                tracing::warn!(
                    server,
                    "the pinned certificate expired on {}; it is still trusted because it is pinned, but renew it",
                    s.not_after
                );
            }
        }
        Ok(stream)
    }

    /// Fetches the server's certificate without trusting it (nothing is sent
    /// over this connection).
    async fn inspect(&self, host: &str, server: &str) -> Option<CertSummary> {
        let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(server))
            .await
            .ok()?
            .ok()?;
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.inspector.connect(host, tcp))
            .await
            .ok()?
            .ok()?;
        peer_der(&stream).as_deref().and_then(CertSummary::from_der)
    }
}

fn peer_der(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream
        .get_ref()
        .peer_certificate()
        .ok()
        .flatten()
        .and_then(|c| c.to_der().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_the_forms_people_paste() {
        let colon = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
        let f = Fingerprint::parse(colon).unwrap();
        assert_eq!(f.to_string(), colon);
        let plain = colon.replace(':', "").to_lowercase();
        assert_eq!(Fingerprint::parse(&plain).unwrap(), f);
        assert_eq!(
            Fingerprint::parse(&format!("sha256 Fingerprint={colon}")).unwrap(),
            f
        );
        assert_eq!(Fingerprint::parse(&format!("sha256:{plain}")).unwrap(), f);
        for bad in ["", "AB:CD", &format!("{plain}00"), &plain.replace('a', "g")] {
            assert!(Fingerprint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn openssl_verify_results_are_classified() {
        let cases = [
            ("error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:ssl/statem/statem_clnt.c:2102: (IP address mismatch)", CertProblem::NameMismatch),
            ("... certificate verify failed ... (hostname mismatch)", CertProblem::NameMismatch),
            ("... certificate verify failed ... (self-signed certificate)", CertProblem::SelfSigned),
            ("... certificate verify failed ... (self signed certificate)", CertProblem::SelfSigned),
            ("... certificate verify failed ... (self-signed certificate in certificate chain)", CertProblem::UnknownAuthority),
            ("... certificate verify failed ... (unable to get local issuer certificate)", CertProblem::UnknownAuthority),
            ("... certificate verify failed ... (certificate has expired)", CertProblem::Expired),
            ("... certificate verify failed ... (certificate is not yet valid)", CertProblem::NotYetValid),
            ("... certificate verify failed ... (invalid CA certificate)", CertProblem::Other("invalid CA certificate".into())),
        ];
        for (message, want) in cases {
            assert_eq!(CertProblem::from_openssl(message), Some(want), "{message}");
        }
        assert_eq!(
            CertProblem::from_openssl("unexpected eof while reading"),
            None
        );
    }

    #[test]
    fn the_labs_certificate_gets_the_pin_as_its_fix() {
        let cert = CertSummary {
            fingerprint: Fingerprint([0xab; 32]),
            common_name: Some("192.168.1.20".into()),
            alt_names: vec![],
            issuer: "CN=192.168.1.20".into(),
            self_signed: true,
            not_after: "Nov 30 04:14:00 2027 +00:00".into(),
            expired: false,
            not_yet_valid: false,
        };
        let e = TlsError::Untrusted {
            server: "192.168.1.20:443".into(),
            problem: CertProblem::NameMismatch,
            certificate: Some(Box::new(cert.clone())),
        }
        .to_string();
        assert!(e.contains("only in its common name (192.168.1.20)"), "{e}");
        assert!(
            e.contains(&format!("signaling.pin_sha256 = \"{}\"", cert.fingerprint)),
            "{e}"
        );
        assert!(e.contains("no subjectAltName"), "{e}");
        let e = TlsError::Untrusted {
            server: "192.168.1.20:443".into(),
            problem: CertProblem::PinMismatch,
            certificate: Some(Box::new(cert)),
        }
        .to_string();
        assert!(e.contains("is not pinned"), "{e}");
        assert!(e.contains("someone is in between"), "{e}");
    }

    #[test]
    fn host_matching_uses_the_alt_names_only() {
        let mut c = CertSummary {
            fingerprint: Fingerprint([0; 32]),
            common_name: Some("127.0.0.1".into()),
            alt_names: vec![],
            issuer: String::new(),
            self_signed: true,
            not_after: String::new(),
            expired: false,
            not_yet_valid: false,
        };
        assert!(!c.matches_host("127.0.0.1"));
        c.alt_names = vec!["127.0.0.1".into(), "*.example.org".into()];
        assert!(c.matches_host("127.0.0.1"));
        assert!(c.matches_host("bell.example.org"));
        assert!(!c.matches_host("a.bell.example.org"));
        assert!(!c.matches_host("example.org"));
    }

    #[test]
    fn contradictory_trust_settings_are_refused() {
        let pin = "00".repeat(32);
        let s = TrustSettings {
            pin_sha256: vec![pin.clone()],
            insecure_skip_verify: true,
            ..Default::default()
        };
        assert!(Tls::new(&s)
            .unwrap_err()
            .to_string()
            .contains("cannot be combined"));
        let s = TrustSettings {
            pin_sha256: vec![pin],
            ca_file: Some("x.pem".into()),
            ..Default::default()
        };
        assert!(Tls::new(&s)
            .unwrap_err()
            .to_string()
            .contains("cannot be combined"));
        let s = TrustSettings {
            pin_sha256: vec!["nope".into()],
            ..Default::default()
        };
        assert!(Tls::new(&s)
            .unwrap_err()
            .to_string()
            .contains("not a SHA-256"));
    }

    #[test]
    fn a_bad_ca_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("ca.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let s = |ca: PathBuf| TrustSettings {
            ca_file: Some(ca),
            ..Default::default()
        };
        let e = Tls::new(&s(bad)).unwrap_err().to_string();
        assert!(e.contains("not a PEM certificate"), "{e}");
        let e = Tls::new(&s(dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read ca_file"), "{e}");
    }
}
