//! Encryption at rest of endpoint signing secrets.
//!
//! [`SealingStore`] wraps any [`Store`] and encrypts ("seals") [`Endpoint::secret`] on
//! its way into the store and decrypts ("opens") it on its way out, so every store
//! keeps only ciphertext while the dispatcher and its callers see the secret as given.
//!
//! ```rust,no_run
//! use std::sync::Arc;
//! use webhook_dispatcher::{Dispatcher, DispatcherConfig, MemoryStore, SealingKey, SealingStore};
//!
//! # async fn run() -> Result<(), webhook_dispatcher::Error> {
//! // 32 random bytes in base64, e.g. from `openssl rand -base64 32`.
//! let key = SealingKey::from_base64("q0Xr0m3nVq3a0xZqv0lK3dY4m2w3qG5G7b3r8Yk0aGQ=")?;
//! let store = SealingStore::new(Arc::new(MemoryStore::new()), key);
//! let dispatcher = Dispatcher::new_with_storage(DispatcherConfig::default(), Arc::new(store)).await;
//! # let _ = dispatcher; Ok(()) }
//! ```
//!
//! # Stored form
//!
//! A sealed secret is stored as the ASCII string
//! `sealed:v1:<key id>:<base64url(nonce || ciphertext || tag)>`:
//!
//! - AES-256-GCM (ring), a fresh random 96-bit nonce for every write;
//! - the associated data is the endpoint id, so a sealed secret copied onto another
//!   endpoint does not open (secrets cannot be swapped between endpoints);
//! - the key id is 8 hex digits of a SHA-256 digest of the key: it tells a wrong key
//!   apart from altered data in error messages, and reveals nothing usable about the key.
//!
//! # Compatibility
//!
//! - A secret stored in plaintext (written before a key was configured) is returned as
//!   it is, and is sealed the next time its endpoint is written (any
//!   [`Store::put_endpoint`], e.g. a `PUT` of the endpoint in `webhookd`).
//!   [`SealingStore::check`] counts such secrets.
//! - A sealed secret is never handed out undecrypted: without a key
//!   ([`SealingStore::without_key`]) or with another key, reading its endpoint fails with
//!   [`webhook_core::Error::Corrupt`] naming the endpoint and the key ids (never the
//!   secret). The dispatcher then cannot load the endpoint and sends nothing to it (it
//!   never sends unsigned or wrongly signed requests instead); its deliveries wait.
//! - A plaintext secret that itself starts with `sealed:` is refused on write
//!   ([`webhook_core::Error::Invalid`] on `secret`), so the two forms never mix up.
//! - A store used without any `SealingStore` sees the sealed string as the secret: use
//!   the same wrapper (with the key) everywhere the store is opened.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest::{SHA256, digest},
    rand::{SecureRandom as _, SystemRandom},
};
use webhook_core::{
    ClaimRequest, Claimed, Completed, DeadLetterQuery, Delivery, DeliveryRecord, Endpoint,
    EndpointId, Enqueued, Event, EventId, EventRecord, Finished, IdempotencyKey, Secret, Store,
    TenantId,
};

use crate::Error;

/// What every sealed secret starts with; the version fixes the algorithm and layout.
pub const SEALED_PREFIX: &str = "sealed:v1:";

/// Secrets starting with this are taken for sealed ones (any version).
const SEALED_MARK: &[u8] = b"sealed:";

/// Length of a key in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// Domain separation of the associated data and of the key id.
const AAD_CONTEXT: &[u8] = b"webhook-dispatcher endpoint secret v1\0";
const KEY_ID_CONTEXT: &[u8] = b"webhook-dispatcher sealing key id v1\0";

const TAG_LEN: usize = 16;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A 256-bit key that seals endpoint secrets. `Debug` shows only its key id.
#[derive(Clone)]
pub struct SealingKey {
    key: Arc<LessSafeKey>,
    id: String,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealingKey(id={})", self.id)
    }
}

impl SealingKey {
    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let mut id_input = Vec::with_capacity(KEY_ID_CONTEXT.len() + KEY_LEN);
        id_input.extend_from_slice(KEY_ID_CONTEXT);
        id_input.extend_from_slice(bytes);
        let id = digest(&SHA256, &id_input).as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // AES-256-GCM takes any 32-byte key: this cannot fail.
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .unwrap_or_else(|_| unreachable!("AES-256-GCM accepts every 32-byte key"));
        Self {
            key: Arc::new(LessSafeKey::new(unbound)),
            id,
        }
    }

    /// A key written in base64 (standard or URL-safe alphabet, padding optional), as
    /// printed by `openssl rand -base64 32`. Surrounding whitespace is ignored.
    ///
    /// # Errors
    /// [`Error::Invalid`] on `secret_encryption_key` when the text is not base64 or does
    /// not decode to exactly 32 bytes. The message never contains the text.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        let cleaned: String = text
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '/',
                c => c,
            })
            .filter(|&c| c != '=')
            .collect();
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(cleaned.as_bytes())
            .map_err(|_| Error::Invalid {
                field: "secret_encryption_key",
                message: format!(
                    "must be {KEY_LEN} random bytes written in base64 (it is not base64)"
                ),
            })?;
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| Error::Invalid {
            field: "secret_encryption_key",
            message: format!(
                "must be {KEY_LEN} random bytes written in base64 (it decodes to {} bytes)",
                decoded.len()
            ),
        })?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A new random key, written in base64 (the form [`from_base64`](Self::from_base64)
    /// reads). Keep it safe: without it, sealed secrets cannot be read back.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the system's random number generator fails.
    pub fn generate_base64() -> Result<String, Error> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Error::Invalid {
                field: "secret_encryption_key",
                message: "the system random number generator failed".to_owned(),
            })?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// The key id: 8 hex digits of a SHA-256 digest of the key, written into every
    /// secret it seals.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `secret` for endpoint `id`: the stored form described in the
    /// [module documentation](self).
    ///
    /// # Errors
    /// [`webhook_core::Error::Unavailable`] if the random number generator fails.
    pub fn seal(&self, id: &EndpointId, secret: &Secret) -> webhook_core::Result<Secret> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| {
            webhook_core::Error::Unavailable(
                "the system random number generator failed; the secret was not stored".to_owned(),
            )
        })?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + secret.expose().len() + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        let mut in_out = secret.expose().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(id)),
                &mut in_out,
            )
            .map_err(|_| webhook_core::Error::Invalid {
                field: "secret",
                message: "too long to encrypt".to_owned(),
            })?;
        sealed.extend_from_slice(&in_out);
        Ok(Secret::new(format!(
            "{SEALED_PREFIX}{}:{}",
            self.id,
            B64.encode(&sealed)
        )))
    }

    /// Opens a secret sealed for endpoint `id`; a plaintext secret is returned as it is.
    ///
    /// # Errors
    /// [`webhook_core::Error::Corrupt`] naming the endpoint when the secret was sealed
    /// with another key, for another endpoint, or was altered.
    pub fn open(&self, id: &EndpointId, secret: &Secret) -> webhook_core::Result<Secret> {
        open(Some(self), id, secret)
    }
}

/// The associated data of endpoint `id`'s secret.
fn aad(id: &EndpointId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_CONTEXT.len() + id.as_str().len());
    aad.extend_from_slice(AAD_CONTEXT);
    aad.extend_from_slice(id.as_str().as_bytes());
    aad
}

/// Whether a secret is in the sealed form (of any version), as opposed to plaintext.
pub fn is_sealed(secret: &Secret) -> bool {
    secret.expose().starts_with(SEALED_MARK)
}

fn corrupt(id: &EndpointId, what: impl fmt::Display) -> webhook_core::Error {
    webhook_core::Error::Corrupt(format!("the secret of endpoint {:?} {what}", id.as_str()))
}

/// Opens `secret` of endpoint `id` with `key` (plaintext passes through).
fn open(
    key: Option<&SealingKey>,
    id: &EndpointId,
    secret: &Secret,
) -> webhook_core::Result<Secret> {
    if !is_sealed(secret) {
        return Ok(secret.clone());
    }
    // Only ASCII is ever written after the prefix; anything else is not ours.
    let text = std::str::from_utf8(secret.expose())
        .map_err(|_| corrupt(id, "is not in the sealed form"))?;
    let Some(rest) = text.strip_prefix(SEALED_PREFIX) else {
        let version = text.split(':').nth(1).unwrap_or("");
        return Err(corrupt(
            id,
            format!(
                "is sealed in a form this version does not know ({version:?}); expected {SEALED_PREFIX:?}"
            ),
        ));
    };
    let (key_id, body) = rest
        .split_once(':')
        .ok_or_else(|| corrupt(id, "is not in the sealed form"))?;
    let key_id_shown: String = key_id.chars().take(16).collect();
    let Some(key) = key else {
        return Err(corrupt(
            id,
            format!(
                "is encrypted (key id {key_id_shown}) but no secret encryption key is configured"
            ),
        ));
    };
    if key_id != key.id {
        return Err(corrupt(
            id,
            format!(
                "was encrypted with key id {key_id_shown}, but the configured key has id {}",
                key.id
            ),
        ));
    }
    let mut sealed = B64
        .decode(body.as_bytes())
        .map_err(|_| corrupt(id, "is not in the sealed form (bad base64)"))?;
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(corrupt(id, "is not in the sealed form (too short)"));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[..NONCE_LEN]);
    let plain = key
        .key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(id)),
            &mut sealed[NONCE_LEN..],
        )
        .map_err(|_| {
            corrupt(
                id,
                format!(
                    "does not decrypt with key id {}: it was altered or copied from another endpoint",
                    key.id
                ),
            )
        })?;
    Ok(Secret::new(plain))
}

/// How the secrets in a store are kept, from [`SealingStore::check`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealingReport {
    /// Endpoints whose secret is sealed and opens with the configured key.
    pub sealed: usize,
    /// Endpoints whose secret is stored in plaintext.
    pub plaintext: usize,
    /// Endpoints without a secret.
    pub without_secret: usize,
}

/// A [`Store`] that seals endpoint secrets before they reach `inner` and opens them on
/// the way back; every other call is passed through unchanged. See the
/// [module documentation](self).
pub struct SealingStore {
    inner: Arc<dyn Store>,
    key: Option<SealingKey>,
}

impl fmt::Debug for SealingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingStore")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl SealingStore {
    /// Seals secrets written to `inner` with `key`; opens those read back.
    pub fn new(inner: Arc<dyn Store>, key: SealingKey) -> Self {
        Self {
            inner,
            key: Some(key),
        }
    }

    /// Stores secrets in plaintext, and refuses to hand out sealed ones (reading an
    /// endpoint whose secret is sealed fails): for a store that may hold secrets sealed
    /// by a process that had the key.
    pub fn without_key(inner: Arc<dyn Store>) -> Self {
        Self { inner, key: None }
    }

    /// The wrapped store (which holds the sealed forms).
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&SealingKey> {
        self.key.as_ref()
    }

    /// `endpoint` as it is written to the inner store.
    ///
    /// # Errors
    /// [`webhook_core::Error::Invalid`] on `secret` when a plaintext secret starts with
    /// `sealed:`.
    pub fn seal_endpoint(&self, endpoint: &Endpoint) -> webhook_core::Result<Endpoint> {
        let mut stored = endpoint.clone();
        if let Some(secret) = &endpoint.secret {
            if is_sealed(secret) {
                return Err(webhook_core::Error::invalid(
                    "secret",
                    "must not start with \"sealed:\" (reserved for encrypted secrets)",
                ));
            }
            if let Some(key) = &self.key {
                stored.secret = Some(key.seal(&endpoint.id, secret)?);
            }
        }
        Ok(stored)
    }

    /// `endpoint` as read from the inner store, with its secret opened.
    ///
    /// # Errors
    /// [`webhook_core::Error::Corrupt`] when a sealed secret does not open (no key, a
    /// different key, altered, or moved from another endpoint).
    pub fn open_endpoint(&self, mut endpoint: Endpoint) -> webhook_core::Result<Endpoint> {
        if let Some(secret) = &endpoint.secret {
            endpoint.secret = Some(open(self.key.as_ref(), &endpoint.id, secret)?);
        }
        Ok(endpoint)
    }

    /// Reads every endpoint and opens every sealed secret: proves the key fits before
    /// work starts, and counts secrets still stored in plaintext.
    ///
    /// # Errors
    /// The first secret that does not open ([`webhook_core::Error::Corrupt`]), or the
    /// inner store's error.
    pub async fn check(&self) -> webhook_core::Result<SealingReport> {
        let mut report = SealingReport::default();
        for endpoint in self.inner.list_endpoints(None).await? {
            match &endpoint.secret {
                None => report.without_secret += 1,
                Some(secret) if is_sealed(secret) => {
                    open(self.key.as_ref(), &endpoint.id, secret)?;
                    report.sealed += 1;
                }
                Some(_) => report.plaintext += 1,
            }
        }
        Ok(report)
    }
}

#[async_trait]
impl Store for SealingStore {
    async fn put_endpoint(&self, endpoint: &Endpoint) -> webhook_core::Result<()> {
        // Checked in plaintext: the inner store only sees the sealed secret.
        endpoint.validate()?;
        let stored = self.seal_endpoint(endpoint)?;
        self.inner.put_endpoint(&stored).await
    }

    async fn get_endpoint(&self, id: &EndpointId) -> webhook_core::Result<Option<Endpoint>> {
        self.inner
            .get_endpoint(id)
            .await?
            .map(|e| self.open_endpoint(e))
            .transpose()
    }

    async fn list_endpoints(
        &self,
        tenant: Option<&TenantId>,
    ) -> webhook_core::Result<Vec<Endpoint>> {
        self.inner
            .list_endpoints(tenant)
            .await?
            .into_iter()
            .map(|e| self.open_endpoint(e))
            .collect()
    }

    async fn delete_endpoint(&self, id: &EndpointId) -> webhook_core::Result<bool> {
        self.inner.delete_endpoint(id).await
    }

    async fn enqueue(
        &self,
        event: &Event,
        endpoints: &[EndpointId],
        now: DateTime<Utc>,
    ) -> webhook_core::Result<Enqueued> {
        self.inner.enqueue(event, endpoints, now).await
    }

    async fn claim(&self, request: &ClaimRequest) -> webhook_core::Result<Vec<Claimed>> {
        self.inner.claim(request).await
    }

    async fn complete(
        &self,
        finished: &[Finished],
        now: DateTime<Utc>,
    ) -> webhook_core::Result<Completed> {
        self.inner.complete(finished, now).await
    }

    async fn get_delivery(
        &self,
        key: &IdempotencyKey,
    ) -> webhook_core::Result<Option<DeliveryRecord>> {
        self.inner.get_delivery(key).await
    }

    async fn get_event(
        &self,
        tenant: Option<&TenantId>,
        id: &EventId,
    ) -> webhook_core::Result<Option<EventRecord>> {
        self.inner.get_event(tenant, id).await
    }

    async fn list_dead(&self, query: &DeadLetterQuery) -> webhook_core::Result<Vec<Delivery>> {
        self.inner.list_dead(query).await
    }

    async fn replay_dead(
        &self,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> webhook_core::Result<bool> {
        self.inner.replay_dead(key, now).await
    }

    async fn replay_all_dead(
        &self,
        tenant: Option<&TenantId>,
        now: DateTime<Utc>,
    ) -> webhook_core::Result<u64> {
        self.inner.replay_all_dead(tenant, now).await
    }

    async fn prune(&self, before: DateTime<Utc>) -> webhook_core::Result<u64> {
        self.inner.prune(before).await
    }

    async fn unfinished(&self) -> webhook_core::Result<Option<u64>> {
        self.inner.unfinished().await
    }
}

#[cfg(test)]
mod tests {
    use webhook_core::MemoryStore;

    use super::*;

    fn key(byte: u8) -> SealingKey {
        SealingKey::from_bytes(&[byte; KEY_LEN])
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn keys_parse_from_base64_and_never_show_themselves() {
        let text = SealingKey::generate_base64().unwrap();
        let k = SealingKey::from_base64(&format!("  {text}\n")).unwrap();
        assert_eq!(k.id().len(), 8);
        // URL-safe and unpadded spellings of the same key are the same key.
        let url = text.replace('+', "-").replace('/', "_").replace('=', "");
        assert_eq!(SealingKey::from_base64(&url).unwrap().id(), k.id());
        let shown = format!("{k:?}");
        assert!(!shown.contains(&text) && !shown.contains(url.trim_end_matches('=')));
        assert_eq!(shown, format!("SealingKey(id={})", k.id()));

        for bad in ["", "not base64 at all!", "c2hvcnQ=", &"QUFB".repeat(20)] {
            let e = SealingKey::from_base64(bad).unwrap_err();
            let message = e.to_string();
            assert!(message.contains("secret_encryption_key"), "{message}");
            if !bad.is_empty() {
                assert!(!message.contains(bad), "{message}");
            }
        }
        assert_ne!(key(1).id(), key(2).id());
    }

    #[test]
    fn secrets_round_trip_and_bind_to_their_endpoint() {
        let k = key(7);
        let a = EndpointId::from("a");
        for plain in [
            &b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"[..],
            b"raw",
            &[0xff, 0, 1],
        ] {
            let secret = Secret::new(plain);
            let sealed = k.seal(&a, &secret).unwrap();
            assert!(is_sealed(&sealed));
            let text = std::str::from_utf8(sealed.expose()).unwrap();
            assert!(
                text.starts_with(&format!("{SEALED_PREFIX}{}:", k.id())),
                "{text}"
            );
            assert!(!contains(sealed.expose(), plain));
            assert_eq!(k.open(&a, &sealed).unwrap(), secret);
            // A fresh nonce every time.
            assert_ne!(k.seal(&a, &secret).unwrap(), sealed);
            // Another endpoint, another key, or a flipped byte: a clear error.
            let moved = k.open(&EndpointId::from("b"), &sealed).unwrap_err();
            assert!(matches!(moved, webhook_core::Error::Corrupt(_)), "{moved}");
            assert!(moved.to_string().contains("\"b\""), "{moved}");
            let wrong = key(8).open(&a, &sealed).unwrap_err();
            assert!(wrong.to_string().contains(k.id()), "{wrong}");
            assert!(wrong.to_string().contains(key(8).id()), "{wrong}");
            let mut altered = text.to_owned().into_bytes();
            let last = altered.len() - 3;
            altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
            assert!(k.open(&a, &Secret::new(&altered)).is_err());
            let none = open(None, &a, &sealed).unwrap_err();
            assert!(
                none.to_string().contains("no secret encryption key"),
                "{none}"
            );
        }
        // Plaintext passes through; malformed sealed forms are errors, not garbage.
        assert_eq!(
            k.open(&a, &Secret::new("plain")).unwrap(),
            Secret::new("plain")
        );
        for bad in [
            "sealed:v1:",
            "sealed:v1:abcd",
            "sealed:v2:x:y",
            &format!("sealed:v1:{}:!!", k.id()),
            &format!("sealed:v1:{}:AAAA", k.id()),
        ] {
            let e = k.open(&a, &Secret::new(bad)).unwrap_err();
            assert!(matches!(e, webhook_core::Error::Corrupt(_)), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_secret_is_checked_before_it_is_sealed() {
        let inner = Arc::new(MemoryStore::new());
        let store = SealingStore::new(inner.clone(), key(3));
        let endpoint = Endpoint::new("ep", "https://example.com/").with_secret("whsec_not base64!");
        let err = store.put_endpoint(&endpoint).await.unwrap_err();
        assert!(
            matches!(
                err,
                webhook_core::Error::Invalid {
                    field: "secret",
                    ..
                }
            ),
            "{err}"
        );
        assert!(inner.get_endpoint(&"ep".into()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_store_holds_only_ciphertext() {
        let inner = Arc::new(MemoryStore::new());
        let store = SealingStore::new(inner.clone(), key(3));
        let secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0";
        let endpoint = Endpoint::new("ep", "https://example.com/").with_secret(secret);
        store.put_endpoint(&endpoint).await.unwrap();

        let raw = inner.get_endpoint(&"ep".into()).await.unwrap().unwrap();
        let raw_secret = raw.secret.clone().unwrap();
        assert!(is_sealed(&raw_secret));
        let raw_json = serde_json::to_string(&raw).unwrap();
        assert!(!raw_json.contains(secret) && !raw_json.contains("c2VjcmV0LXNlY3JldC"));

        assert_eq!(
            store.get_endpoint(&"ep".into()).await.unwrap(),
            Some(endpoint.clone())
        );
        assert_eq!(
            store.list_endpoints(None).await.unwrap(),
            vec![endpoint.clone()]
        );
        assert_eq!(
            store.check().await.unwrap(),
            SealingReport {
                sealed: 1,
                plaintext: 0,
                without_secret: 0
            }
        );

        // Without the key, or with another one: errors, never the sealed text.
        for other in [
            SealingStore::without_key(inner.clone()),
            SealingStore::new(inner.clone(), key(4)),
        ] {
            assert!(other.get_endpoint(&"ep".into()).await.is_err());
            assert!(other.list_endpoints(None).await.is_err());
            assert!(other.check().await.is_err());
        }
        // A reserved prefix is refused and writes nothing.
        let e = store
            .put_endpoint(&Endpoint::new("x", "https://example.com/").with_secret("sealed:v1:zz"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                webhook_core::Error::Invalid {
                    field: "secret",
                    ..
                }
            ),
            "{e}"
        );
        assert!(inner.get_endpoint(&"x".into()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn plaintext_secrets_keep_working_and_are_sealed_on_the_next_write() {
        let inner = Arc::new(MemoryStore::new());
        let plain = Endpoint::new("old", "https://example.com/").with_secret("old-secret");
        SealingStore::without_key(inner.clone())
            .put_endpoint(&plain)
            .await
            .unwrap();
        assert_eq!(
            inner
                .get_endpoint(&"old".into())
                .await
                .unwrap()
                .unwrap()
                .secret,
            Some(Secret::new("old-secret"))
        );
        let store = SealingStore::new(inner.clone(), key(5));
        assert_eq!(store.check().await.unwrap().plaintext, 1);
        let read = store.get_endpoint(&"old".into()).await.unwrap().unwrap();
        assert_eq!(read, plain);
        store.put_endpoint(&read).await.unwrap();
        let raw = inner.get_endpoint(&"old".into()).await.unwrap().unwrap();
        assert!(is_sealed(raw.secret.as_ref().unwrap()));
        assert_eq!(store.check().await.unwrap().sealed, 1);
        assert_eq!(
            store.get_endpoint(&"old".into()).await.unwrap().unwrap(),
            plain
        );
    }

    #[tokio::test]
    async fn a_sealed_secret_moved_to_another_endpoint_does_not_open() {
        let inner = Arc::new(MemoryStore::new());
        let store = SealingStore::new(inner.clone(), key(6));
        store
            .put_endpoint(&Endpoint::new("a", "https://example.com/a").with_secret("secret-a"))
            .await
            .unwrap();
        store
            .put_endpoint(&Endpoint::new("b", "https://example.com/b").with_secret("secret-b"))
            .await
            .unwrap();
        // Someone with write access to the store copies a's sealed secret onto b.
        let sealed_a = inner
            .get_endpoint(&"a".into())
            .await
            .unwrap()
            .unwrap()
            .secret;
        let mut b = inner.get_endpoint(&"b".into()).await.unwrap().unwrap();
        b.secret = sealed_a;
        inner.put_endpoint(&b).await.unwrap();
        let e = store.get_endpoint(&"b".into()).await.unwrap_err();
        assert!(
            e.to_string().contains("copied from another endpoint"),
            "{e}"
        );
    }
}
