//! Users, API tokens and the checking of credentials.
//!
//! Users and tokens are kept in TOML files: `[[user]]` tables with `name` and
//! `password_hash` (an argon2 PHC string), and `[[token]]` tables with `user`,
//! `label` and `sha256` (hex of the token's SHA-256). The server reads
//! `DATA_DIR/users.toml` and, when given, the configuration file, and rereads
//! them when they change, so a user added while it runs can log in at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Name of the users file inside a data directory.
pub const USERS_FILE: &str = "users.toml";

/// Prefix of every API token, so that leaked tokens are easy to search for.
pub const TOKEN_PREFIX: &str = "pvt_";

/// How long a checked password is remembered, so that argon2 runs once per
/// client and not once per request.
const VERIFIED_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Deserialize)]
struct UserEntry {
    name: String,
    password_hash: String,
}

#[derive(Debug, Clone, Deserialize)]
struct TokenEntry {
    user: String,
    sha256: String,
}

#[derive(Debug, Default, Deserialize)]
struct CredentialsFile {
    #[serde(default)]
    user: Vec<UserEntry>,
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// Users and tokens read from one set of files.
#[derive(Debug, Default)]
struct Loaded {
    stamps: Vec<Stamp>,
    users: HashMap<String, String>,
    tokens: HashMap<String, String>,
}

/// Checks credentials against the users and tokens in a set of files.
#[derive(Debug)]
pub struct Authenticator {
    files: Vec<PathBuf>,
    loaded: Mutex<Loaded>,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

/// File identity for change detection: the modification time, the inode (a
/// rewrite renames a new file into place) and the size.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.ino(), meta.len()))
}

fn read_credentials(path: &Path) -> Result<CredentialsFile, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(CredentialsFile::default()),
        Err(err) => Err(format!("cannot read {}: {err}", path.display())),
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Returns the hex SHA-256 stored for a token.
pub fn token_digest(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Credentials found in a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    Password { user: String, password: String },
    Token(String),
}

impl Credentials {
    /// Reads HTTP Basic or Bearer from `Authorization`, or ntopng's
    /// `user=NAME; password=PASS` from `Cookie`.
    pub fn from_headers(authorization: Option<&str>, cookie: Option<&str>) -> Result<Option<Credentials>, ApiError> {
        if let Some(value) = authorization {
            let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
            if scheme.eq_ignore_ascii_case("basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest.trim())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| ApiError::unauthorized("the Basic credentials are not base64 of NAME:PASSWORD"))?;
                let (user, password) = decoded.split_once(':').ok_or_else(|| {
                    ApiError::unauthorized("the Basic credentials have no ':' between name and password")
                })?;
                return Ok(Some(Credentials::Password { user: user.to_string(), password: password.to_string() }));
            }
            if scheme.eq_ignore_ascii_case("bearer") {
                return Ok(Some(Credentials::Token(rest.trim().to_string())));
            }
            return Err(ApiError::unauthorized(format!(
                "authorization scheme {scheme:?} is not accepted; use Basic or Bearer"
            )));
        }
        if let Some(cookie) = cookie {
            let mut user = None;
            let mut password = None;
            for pair in cookie.split(';') {
                match pair.trim().split_once('=') {
                    Some(("user", value)) => user = Some(value.to_string()),
                    Some(("password", value)) => password = Some(value.to_string()),
                    _ => {}
                }
            }
            if let (Some(user), Some(password)) = (user, password) {
                return Ok(Some(Credentials::Password { user, password }));
            }
        }
        Ok(None)
    }
}

impl Authenticator {
    pub fn new(files: Vec<PathBuf>) -> Authenticator {
        Authenticator { files, loaded: Mutex::new(Loaded::default()), verified: Mutex::new(HashMap::new()) }
    }

    /// Rereads the files when one changed; returns whether any user or token exists.
    pub fn reload(&self) -> Result<bool, String> {
        let stamps: Vec<Stamp> = self.files.iter().map(|path| stamp(path)).collect();
        let mut loaded = self.loaded.lock().expect("lock");
        if loaded.stamps != stamps || loaded.stamps.is_empty() {
            let mut fresh = Loaded { stamps, ..Loaded::default() };
            for path in &self.files {
                let file = read_credentials(path)?;
                for user in file.user {
                    fresh.users.insert(user.name, user.password_hash);
                }
                for token in file.token {
                    fresh.tokens.insert(token.sha256.to_ascii_lowercase(), token.user);
                }
            }
            *loaded = fresh;
            self.verified.lock().expect("lock").clear();
        }
        Ok(!loaded.users.is_empty() || !loaded.tokens.is_empty())
    }

    /// Returns whether any user or token exists.
    pub fn has_users(&self) -> bool {
        self.reload().unwrap_or(true)
    }

    /// Returns the user the credentials belong to. Runs argon2, so call it
    /// off the async threads.
    pub fn check(&self, credentials: &Credentials) -> Result<String, ApiError> {
        self.reload().map_err(|err| {
            tracing::error!("the users file cannot be read: {err}");
            ApiError::internal("the server's users file cannot be read; the server log names the problem")
        })?;
        let wrong = || ApiError::unauthorized("wrong user name, password or token");
        match credentials {
            Credentials::Token(token) => {
                let loaded = self.loaded.lock().expect("lock");
                loaded.tokens.get(&token_digest(token)).cloned().ok_or_else(wrong)
            }
            Credentials::Password { user, password } => {
                let stored = self.loaded.lock().expect("lock").users.get(user).cloned().ok_or_else(wrong)?;
                let key = sha256(&[user.as_bytes(), password.as_bytes(), stored.as_bytes()]);
                {
                    let mut verified = self.verified.lock().expect("lock");
                    verified.retain(|_, at| at.elapsed() < VERIFIED_TTL);
                    if verified.contains_key(&key) {
                        return Ok(user.clone());
                    }
                }
                let hash = PasswordHash::new(&stored).map_err(|err| {
                    ApiError::internal(format!("the stored password hash of user {user:?} is not valid: {err}"))
                })?;
                Argon2::default().verify_password(password.as_bytes(), &hash).map_err(|_| wrong())?;
                self.verified.lock().expect("lock").insert(key, Instant::now());
                Ok(user.clone())
            }
        }
    }
}

/// Hashes a password with argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| format!("cannot hash the password: {err}"))
}

/// Makes a new random API token.
pub fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| format!("no random bytes from the system: {err}"))?;
    Ok(format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// Checks a user name: 1 to 64 letters, digits, '.', '_' or '-'.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!("user name {name:?} is not valid; use 1 to 64 letters, digits, '.', '_' or '-'"))
    }
}

/// Adds a user to a credentials file, or replaces the password of an existing
/// one, keeping the rest of the file (comments included) as it is.
pub fn set_user(path: &Path, name: &str, password_hash: &str) -> Result<bool, String> {
    edit_file(path, |doc| {
        let users = tables(doc, "user")?;
        for table in users.iter_mut() {
            if table.get("name").and_then(|item| item.as_str()) == Some(name) {
                table["password_hash"] = toml_edit::value(password_hash);
                return Ok(false);
            }
        }
        let mut table = toml_edit::Table::new();
        table["name"] = toml_edit::value(name);
        table["password_hash"] = toml_edit::value(password_hash);
        users.push(table);
        Ok(true)
    })
}

/// Adds an API token for `user` to a credentials file; only its SHA-256 is stored.
pub fn add_token(path: &Path, user: &str, label: &str, token: &str) -> Result<(), String> {
    edit_file(path, |doc| {
        let known = doc.get("user").and_then(|item| item.as_array_of_tables()).is_some_and(|users| {
            users.iter().any(|table| table.get("name").and_then(|item| item.as_str()) == Some(user))
        });
        if !known {
            return Err(format!(
                "no user {user:?} in {}; add it first with 'pktvault user add {user}'",
                path.display()
            ));
        }
        let mut table = toml_edit::Table::new();
        table["user"] = toml_edit::value(user);
        table["label"] = toml_edit::value(label);
        table["sha256"] = toml_edit::value(token_digest(token));
        tables(doc, "token")?.push(table);
        Ok(())
    })
}

/// Removes a user and its API tokens from a credentials file and returns the
/// number of tokens removed. A user missing from the file is an error.
pub fn remove_user(path: &Path, name: &str) -> Result<usize, String> {
    edit_file(path, |doc| {
        let users = tables(doc, "user")?;
        let before = users.len();
        users.retain(|table| table.get("name").and_then(|item| item.as_str()) != Some(name));
        if users.len() == before {
            return Err(format!("no user {name:?} in {}", path.display()));
        }
        let tokens = tables(doc, "token")?;
        let before = tokens.len();
        tokens.retain(|table| table.get("user").and_then(|item| item.as_str()) != Some(name));
        Ok(before - tokens.len())
    })
}

/// Lists the user names of a credentials file.
pub fn list_users(path: &Path) -> Result<Vec<String>, String> {
    Ok(read_credentials(path)?.user.into_iter().map(|user| user.name).collect())
}

fn tables<'a>(doc: &'a mut toml_edit::DocumentMut, key: &str) -> Result<&'a mut toml_edit::ArrayOfTables, String> {
    doc.entry(key)
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| format!("'{key}' in the file is not an array of tables ([[{key}]])"))
}

fn edit_file<T>(path: &Path, edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<T, String>) -> Result<T, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
    };
    let mut doc: toml_edit::DocumentMut =
        text.parse().map_err(|err| format!("{} is not valid TOML: {err}", path.display()))?;
    let result = edit(&mut doc)?;
    let partial = path.with_extension("toml.partial");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&partial)?;
        file.write_all(doc.to_string().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&partial, path)
    };
    write().map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_each_form() {
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ana:s3cret:x"));
        assert_eq!(
            Credentials::from_headers(Some(&basic), None).unwrap(),
            Some(Credentials::Password { user: "ana".into(), password: "s3cret:x".into() })
        );
        assert_eq!(
            Credentials::from_headers(None, Some("lang=en; user=ana; password=p")).unwrap(),
            Some(Credentials::Password { user: "ana".into(), password: "p".into() })
        );
        assert_eq!(
            Credentials::from_headers(Some("Bearer pvt_abc"), None).unwrap(),
            Some(Credentials::Token("pvt_abc".into()))
        );
        assert_eq!(Credentials::from_headers(None, Some("user=ana")).unwrap(), None);
        assert!(Credentials::from_headers(Some("Digest x"), None).is_err());
    }

    #[test]
    fn users_and_tokens_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pktvault.toml");
        std::fs::write(&path, "# kept\n[[interface]]\nname = \"eth0\"\n").unwrap();
        assert!(set_user(&path, "ana", &hash_password("correct horse").unwrap()).unwrap());
        let token = new_token().unwrap();
        add_token(&path, "ana", "script", &token).unwrap();
        assert!(add_token(&path, "bob", "x", &token).unwrap_err().contains("no user \"bob\""));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# kept\n[[interface]]"), "{text}");

        let auth = Authenticator::new(vec![path.clone()]);
        assert!(auth.has_users());
        let right = Credentials::Password { user: "ana".into(), password: "correct horse".into() };
        assert_eq!(auth.check(&right).unwrap(), "ana");
        assert_eq!(auth.check(&right).unwrap(), "ana");
        let wrong = Credentials::Password { user: "ana".into(), password: "wrong".into() };
        assert_eq!(auth.check(&wrong).unwrap_err().status, 401);
        assert_eq!(auth.check(&Credentials::Token(token)).unwrap(), "ana");
        assert!(auth.check(&Credentials::Token("pvt_nope".into())).is_err());

        assert!(!set_user(&path, "ana", &hash_password("another one").unwrap()).unwrap());
        assert!(auth.check(&right).is_err(), "a changed password is read again");
        assert_eq!(list_users(&path).unwrap(), vec!["ana".to_string()]);

        assert_eq!(remove_user(&path, "ana").unwrap(), 1);
        assert!(list_users(&path).unwrap().is_empty());
        assert!(!auth.has_users());
        assert!(remove_user(&path, "ana").unwrap_err().contains("no user"));
    }

    #[test]
    fn user_names_are_checked() {
        assert!(check_user_name("ops.team-1").is_ok());
        assert!(check_user_name("").is_err());
        assert!(check_user_name("a b").is_err());
        assert!(check_user_name("../x").is_err());
    }
}
