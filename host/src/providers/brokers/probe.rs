//! Health checks that speak each broker's own protocol with the cluster's own
//! credentials: a Redis `AUTH` + `PING`, and an AMQP 0-9-1 handshake up to
//! the server's `connection.tune` (sent only once the PLAIN login succeeded).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a probe failed, without secrets.
pub type ProbeResult = Result<(), String>;

/// Logs in with `url` (credentials included) and expects `PONG`. A
/// `rediss://` URL is verified against `ca_pem`.
pub async fn redis_ping(url: &str, ca_pem: Option<&str>, timeout: Duration) -> ProbeResult {
    let client = match ca_pem {
        Some(ca) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.as_bytes().to_vec()),
            },
        ),
        None => redis::Client::open(url),
    }
    .map_err(|e| format!("bad redis url: {}", e.kind_str()))?;
    let work = async {
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut con).await
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(pong)) if pong == "PONG" => Ok(()),
        Ok(Ok(other)) => Err(format!("PING answered {other:?}")),
        Ok(Err(e)) => Err(format!("redis: {}", e.kind_str())),
        Err(_) => Err("redis did not answer in time".into()),
    }
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    /// The error's category and server code, never the URL it was given.
    fn kind_str(&self) -> String {
        match self.code() {
            Some(code) => format!("{:?} {code}", self.kind()),
            None => format!("{:?}", self.kind()),
        }
    }
}

const FRAME_METHOD: u8 = 1;
const FRAME_END: u8 = 0xCE;

/// A broker connection, in plain text or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// How a probe speaks TLS: the client configuration (trusting the facility
/// CA) and the name the server's certificate must carry.
pub struct Tls<'a> {
    pub config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    pub server_name: &'a str,
}

async fn read_frame(stream: &mut (impl Stream + ?Sized)) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 7];
    stream.read_exact(&mut header).await?;
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
    if size > 1 << 20 {
        return Err(std::io::Error::other("AMQP frame too large"));
    }
    let mut payload = vec![0u8; size + 1];
    stream.read_exact(&mut payload).await?;
    if payload.pop() != Some(FRAME_END) {
        return Err(std::io::Error::other("AMQP frame without frame-end"));
    }
    Ok((header[0], payload))
}

fn method_frame(class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + args.len());
    payload.extend_from_slice(&class.to_be_bytes());
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(args);
    let mut frame = vec![FRAME_METHOD, 0, 0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(FRAME_END);
    frame
}

fn class_method(payload: &[u8]) -> (u16, u16) {
    if payload.len() < 4 {
        return (0, 0);
    }
    (
        u16::from_be_bytes([payload[0], payload[1]]),
        u16::from_be_bytes([payload[2], payload[3]]),
    )
}

/// Opens an AMQP connection up to the login's answer: Ok once the server
/// tunes the connection (the credentials are accepted).
pub async fn amqp_login(
    host: &str,
    port: u16,
    username: &str,
    password: &str,
    tls: Option<Tls<'_>>,
    timeout: Duration,
) -> ProbeResult {
    let work = async {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut stream: Box<dyn Stream> = match tls {
            Some(tls) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(
                    tls.server_name.to_string(),
                )
                .map_err(|e| format!("bad server name: {e}"))?;
                let connector = tokio_rustls::TlsConnector::from(tls.config);
                Box::new(
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS: {e}"))?,
                )
            }
            None => Box::new(tcp),
        };
        stream
            .write_all(b"AMQP\x00\x00\x09\x01")
            .await
            .map_err(|e| e.to_string())?;
        let (kind, payload) = read_frame(&mut stream)
            .await
            .map_err(|e| format!("no connection.start: {e}"))?;
        if kind != FRAME_METHOD || class_method(&payload) != (10, 10) {
            return Err("the server did not send connection.start".to_string());
        }
        // connection.start-ok: client-properties (empty table), mechanism,
        // response, locale.
        let mut args = Vec::new();
        args.extend_from_slice(&0u32.to_be_bytes());
        args.push(5);
        args.extend_from_slice(b"PLAIN");
        let response = format!("\0{username}\0{password}");
        args.extend_from_slice(&(response.len() as u32).to_be_bytes());
        args.extend_from_slice(response.as_bytes());
        args.push(5);
        args.extend_from_slice(b"en_US");
        stream
            .write_all(&method_frame(10, 11, &args))
            .await
            .map_err(|e| e.to_string())?;
        match read_frame(&mut stream).await {
            Ok((FRAME_METHOD, p)) if class_method(&p) == (10, 30) => Ok(()),
            Ok((FRAME_METHOD, p)) if class_method(&p) == (10, 50) => {
                Err("login refused".to_string())
            }
            Ok(_) => Err("unexpected answer to the login".to_string()),
            Err(_) => Err(
                "connection closed at login (credentials refused, or still starting)".to_string(),
            ),
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err("AMQP handshake timed out".into()),
    }
}
