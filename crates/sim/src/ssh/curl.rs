//! `curl`: HTTP(S) GET from inside a simulated host, to loopback addresses
//! only (the simulator never sends traffic elsewhere).
//!
//! Options, as curl reads them: `-f` (`--fail`), `-s` (`--silent`), `-S`
//! (`--show-error`), `-L` (`--location`), `-k` (`--insecure`), `-o FILE`
//! (`--output`), `-H 'Name: value'` (`--header`), `--cacert FILE`,
//! `--pinnedpubkey sha256//BASE64[;sha256//…]`, `-m SECS` (`--max-time`),
//! `--connect-timeout SECS`; short flags combine (`-fsSL`). Exit statuses
//! and messages are curl's: 2 bad option, 3 bad URL, 7 cannot connect
//! (also: an address that is not loopback), 22 HTTP status >= 400 with
//! `-f`, 23 cannot write the output, 28 timeout, 47 too many redirects,
//! 60 certificate not trusted, 77 bad CA file, 90 pin mismatch.
//!
//! Without `--cacert`, `--pinnedpubkey` or `-k` an HTTPS server's
//! certificate is checked against no roots at all (the simulated guest has
//! no CA bundle), so it fails with 60 as an unknown issuer would.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::shell::Context;

/// Largest body kept (a spec, an install script, a homestak binary; not images).
const MAX_BODY: usize = 256 << 20;
const MAX_REDIRECTS: usize = 50;

/// Parsed command line.
#[derive(Default, Debug)]
struct Options {
    fail: bool,
    silent: bool,
    show_error: bool,
    location: bool,
    insecure: bool,
    output: Option<String>,
    headers: Vec<(String, String)>,
    /// `-H @FILE`: headers read from a file, one per line (curl 7.55+).
    header_files: Vec<String>,
    cacert: Option<String>,
    pins: Vec<[u8; 32]>,
    max_time: Option<Duration>,
    connect_timeout: Option<Duration>,
    url: Option<String>,
}

/// A failure, with curl's exit status.
struct Failure {
    code: u32,
    message: String,
}

fn failure(code: u32, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// Runs `curl ARGS`.
pub(super) async fn run(args: &[String], cx: &mut Context) -> u32 {
    let options = match parse(args) {
        Ok(o) => o,
        Err(f) => {
            // Option errors are printed even with -s, as curl does.
            cx.err(format!("curl: ({}) {}\n", f.code, f.message)).await;
            return f.code;
        }
    };
    let options = match read_header_files(options, cx).await {
        Ok(o) => o,
        Err(f) => {
            cx.err(format!("curl: ({}) {}\n", f.code, f.message)).await;
            return f.code;
        }
    };
    match fetch(&options, cx).await {
        Ok(()) => 0,
        Err(f) => {
            if !options.silent || options.show_error {
                cx.err(format!("curl: ({}) {}\n", f.code, f.message)).await;
            }
            f.code
        }
    }
}

fn parse(args: &[String]) -> Result<Options, Failure> {
    let mut o = Options::default();
    let mut it = args.iter();
    let seconds = |v: &str| -> Result<Duration, Failure> {
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| failure(2, format!("option expects a number of seconds: {v}")))
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| failure(2, format!("option {name}: requires parameter")))
        };
        match arg.as_str() {
            "--fail" => o.fail = true,
            "--silent" => o.silent = true,
            "--show-error" => o.show_error = true,
            "--location" => o.location = true,
            "--insecure" => o.insecure = true,
            "-o" | "--output" => o.output = Some(value(arg)?),
            "-H" | "--header" => {
                let header = value(arg)?;
                if let Some(file) = header.strip_prefix('@') {
                    o.header_files.push(file.to_string());
                    continue;
                }
                let (name, v) = header
                    .split_once(':')
                    .filter(|(n, _)| !n.trim().is_empty())
                    .ok_or_else(|| failure(2, format!("invalid header: {header:?}")))?;
                o.headers
                    .push((name.trim().to_string(), v.trim().to_string()));
            }
            "--cacert" => o.cacert = Some(value(arg)?),
            "--pinnedpubkey" => {
                let pins = value(arg)?;
                for pin in pins.split(';') {
                    let digest = pin
                        .strip_prefix("sha256//")
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .and_then(|d| <[u8; 32]>::try_from(d).ok())
                        .ok_or_else(|| {
                            failure(2, "--pinnedpubkey takes sha256//BASE64 (a file path is not supported here)")
                        })?;
                    o.pins.push(digest);
                }
            }
            "-m" | "--max-time" => o.max_time = Some(seconds(&value(arg)?)?),
            "--connect-timeout" => o.connect_timeout = Some(seconds(&value(arg)?)?),
            flag if flag.starts_with("--") => {
                return Err(failure(2, format!("option {flag}: is unknown")));
            }
            flag if flag.len() > 1 && flag.starts_with('-') => {
                let letters: Vec<char> = flag.chars().skip(1).collect();
                for (i, letter) in letters.iter().enumerate() {
                    match letter {
                        'f' => o.fail = true,
                        's' => o.silent = true,
                        'S' => o.show_error = true,
                        'L' => o.location = true,
                        'k' => o.insecure = true,
                        'o' | 'H' | 'm' if i + 1 == letters.len() => {
                            let v = value(flag)?;
                            match letter {
                                'o' => o.output = Some(v),
                                'm' => o.max_time = Some(seconds(&v)?),
                                _ if v.starts_with('@') => {
                                    o.header_files.push(v[1..].to_string());
                                }
                                _ => {
                                    let (name, hv) = v.split_once(':').ok_or_else(|| {
                                        failure(2, format!("invalid header: {v:?}"))
                                    })?;
                                    o.headers.push((name.trim().into(), hv.trim().into()));
                                }
                            }
                        }
                        other => {
                            return Err(failure(2, format!("option -{other}: is unknown")));
                        }
                    }
                }
            }
            url if o.url.is_none() => o.url = Some(url.to_string()),
            extra => {
                return Err(failure(
                    2,
                    format!("only one URL is supported here, got {extra:?} too"),
                ));
            }
        }
    }
    if o.url.is_none() {
        return Err(failure(2, "no URL specified"));
    }
    Ok(o)
}

/// True for the addresses the simulator may reach.
fn loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => ip == Ipv6Addr::LOCALHOST,
        Err(_) => host == "localhost",
    }
}

/// What the certificate check decided (curl's exit status when it failed).
#[derive(Default)]
struct Verdict(AtomicU8);

async fn fetch(o: &Options, cx: &mut Context) -> Result<(), Failure> {
    let text = o.url.as_deref().unwrap_or_default();
    let url = reqwest::Url::parse(text)
        .map_err(|_| failure(3, "URL rejected: Malformed input to a URL function"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(failure(
            1,
            format!("Protocol \"{}\" not supported", url.scheme()),
        ));
    }
    if !loopback(&url) {
        return Err(failure(
            7,
            format!(
                "Failed to connect to {}: the simulator reaches loopback addresses only",
                url.host_str().unwrap_or("?")
            ),
        ));
    }
    let verdict = Arc::new(Verdict::default());
    let trusted = match &o.cacert {
        Some(file) => Some(read_cacert(file, cx).await?),
        None => None,
    };
    let tls = client_config(o, trusted, verdict.clone());
    let redirects = if o.location {
        reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("Maximum redirects followed")
            } else if !loopback(attempt.url()) {
                attempt.error("redirect to a non-loopback address")
            } else {
                attempt.follow()
            }
        })
    } else {
        reqwest::redirect::Policy::none()
    };
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(redirects)
        .no_proxy()
        .connect_timeout(o.connect_timeout.unwrap_or(Duration::from_secs(10)));
    if let Some(t) = o.max_time {
        builder = builder.timeout(t);
    }
    let client = builder
        .build()
        .map_err(|e| failure(2, format!("cannot set up the client: {e}")))?;
    let mut request = client.get(url.clone()).header("User-Agent", "curl/8.14.1");
    for (name, value) in &o.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Err(transport_failure(&e, &verdict, &url)),
    };
    let status = response.status();
    if o.fail && status.as_u16() >= 400 {
        return Err(failure(
            22,
            format!("The requested URL returned error: {}", status.as_u16()),
        ));
    }
    let body = match response.bytes().await {
        Ok(b) if b.len() <= MAX_BODY => b,
        Ok(_) => return Err(failure(63, "Maximum file size exceeded")),
        Err(e) => return Err(transport_failure(&e, &verdict, &url)),
    };
    match &o.output {
        None => {
            cx.out(&body).await;
            Ok(())
        }
        Some(file) => write_output(file, &body, cx).await,
    }
}

fn transport_failure(e: &reqwest::Error, verdict: &Verdict, url: &reqwest::Url) -> Failure {
    match verdict.0.load(Ordering::Relaxed) {
        60 => {
            return failure(
                60,
                "SSL certificate problem: unable to get local issuer certificate",
            );
        }
        90 => return failure(90, "SSL: public key does not match pinned public key"),
        _ => {}
    }
    let host = url.host_str().unwrap_or("?");
    let port = url.port_or_known_default().unwrap_or(0);
    if e.is_timeout() {
        failure(28, "Operation timed out")
    } else if e.is_redirect() {
        failure(
            47,
            "Maximum (50) redirects followed, or a redirect left loopback",
        )
    } else if e.is_connect() {
        failure(
            7,
            format!("Failed to connect to {host} port {port}: Couldn't connect to server"),
        )
    } else {
        failure(56, "Failure when receiving data from the peer")
    }
}

/// Adds the headers of each `-H @FILE`: one `Name: value` per line, blank
/// lines skipped. A file that cannot be read is curl's error 26.
async fn read_header_files(mut o: Options, cx: &mut Context) -> Result<Options, Failure> {
    for file in std::mem::take(&mut o.header_files) {
        let bad = || {
            failure(
                26,
                format!("Failed to open/read local data from file/application: {file}"),
            )
        };
        let path = cx.resolve(&file).map_err(|_| bad())?;
        let text = tokio::fs::read_to_string(&path.host)
            .await
            .map_err(|_| bad())?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (name, value) = line
                .split_once(':')
                .filter(|(n, _)| !n.trim().is_empty())
                .ok_or_else(|| failure(2, format!("invalid header in {file}")))?;
            o.headers
                .push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok(o)
}

async fn read_cacert(
    file: &str,
    cx: &mut Context,
) -> Result<Vec<CertificateDer<'static>>, Failure> {
    let bad = || failure(77, format!("error setting certificate file: {file}"));
    let path = cx.resolve(file).map_err(|_| bad())?;
    let text = tokio::fs::read(&path.host).await.map_err(|_| bad())?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if certs.is_empty() {
        return Err(bad());
    }
    Ok(certs)
}

async fn write_output(file: &str, body: &[u8], cx: &mut Context) -> Result<(), Failure> {
    let fail = || {
        failure(
            23,
            format!(
                "Failure writing output to destination, passed {} returned 0",
                body.len()
            ),
        )
    };
    let path = cx.resolve(file).map_err(|_| fail())?;
    if cx.mounted(&path.guest).is_some() {
        // Storage files hold sizes, not contents: curl does not write there.
        return Err(fail());
    }
    tokio::fs::write(&path.host, body).await.map_err(|_| fail())
}

fn client_config(
    o: &Options,
    trusted: Option<Vec<CertificateDer<'static>>>,
    verdict: Arc<Verdict>,
) -> rustls::ClientConfig {
    homestak_tls::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(CurlVerifier {
        insecure: o.insecure,
        trusted: trusted.unwrap_or_default(),
        pins: o.pins.clone(),
        provider,
        verdict,
    });
    rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

/// curl's checks: a pinned public key when given (even with `-k`), then
/// unless `-k` a certificate from `--cacert` (the server's own, or its
/// issuer with the name checked).
#[derive(Debug)]
struct CurlVerifier {
    insecure: bool,
    trusted: Vec<CertificateDer<'static>>,
    pins: Vec<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    verdict: Arc<Verdict>,
}

impl std::fmt::Debug for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verdict")
    }
}

impl CurlVerifier {
    fn reject(&self, code: u8) -> rustls::Error {
        self.verdict.0.store(code, Ordering::Relaxed);
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    }

    fn chained(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        now: UnixTime,
    ) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for cert in &self.trusted {
            let _ = roots.add(cert.clone());
        }
        if roots.is_empty() {
            return false;
        }
        let Ok(verifier) = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build() else {
            return false;
        };
        verifier
            .verify_server_cert(end_entity, intermediates, name, &[], now)
            .is_ok()
    }
}

impl ServerCertVerifier for CurlVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.pins.is_empty() {
            let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| self.reject(90))?;
            let spki = cert.subject_public_key_info();
            let digest = ring::digest::digest(&ring::digest::SHA256, spki.as_ref());
            if !self.pins.iter().any(|p| p.as_slice() == digest.as_ref()) {
                return Err(self.reject(90));
            }
        }
        if self.insecure || (!self.pins.is_empty() && self.trusted.is_empty()) {
            return Ok(ServerCertVerified::assertion());
        }
        // A self-signed server certificate given as the CA file is trusted
        // as itself (OpenSSL's behaviour, which webpki lacks).
        if self
            .trusted
            .iter()
            .any(|t| t.as_ref() == end_entity.as_ref())
            || self.chained(end_entity, intermediates, server_name, now)
        {
            return Ok(ServerCertVerified::assertion());
        }
        Err(self.reject(60))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
