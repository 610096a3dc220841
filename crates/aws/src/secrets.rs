//! Signing keys read from Secrets Manager when a function starts, instead of from its
//! environment: whoever may read a function's configuration (`lambda:GetFunction`, the
//! console) would otherwise read the keys too, while a secret has its own policy and its
//! reads are logged.

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::error::DisplayErrorContext;

use crate::config::{CDN_KEY_SECRET_ARN, Config, ConfigError, LINK_KEYS_SECRET_ARN};

impl Config {
    /// Reads the secrets the environment named ([`crate::config::SecretRefs`]) into the
    /// transform settings, every problem reported together and none quoting a secret. Once per
    /// function instance: a new value under the same secret reaches instances started after it
    /// was put.
    pub async fn read_secrets(&mut self, sdk: &SdkConfig) -> Result<(), ConfigError> {
        let refs = std::mem::take(&mut self.transforms.secrets);
        if refs.is_empty() {
            return Ok(());
        }
        let client = aws_sdk_secretsmanager::Client::new(sdk);
        let mut invalid = Vec::new();
        if let Some(arn) = &refs.link_keys {
            match secret_string(&client, arn).await {
                Ok(text) => match api::LinkKeys::parse(text.trim()) {
                    Ok(keys) => self.transforms.link_keys = Some(keys),
                    Err(e) => invalid.push(format!("{LINK_KEYS_SECRET_ARN}: secret {arn}: {e}")),
                },
                Err(e) => invalid.push(format!("{LINK_KEYS_SECRET_ARN}: {e}")),
            }
        }
        if let Some((key_pair_id, arn)) = &refs.cdn_key {
            match secret_string(&client, arn).await {
                Ok(text) => match private_key(&text) {
                    Some(pem) => match api::CdnSigner::new(key_pair_id, &pem) {
                        Ok(signer) => self.transforms.cdn = Some(std::sync::Arc::new(signer)),
                        Err(e) => invalid.push(format!("{CDN_KEY_SECRET_ARN}: secret {arn}: {e}")),
                    },
                    None => invalid.push(format!(
                        "{CDN_KEY_SECRET_ARN}: secret {arn} is not JSON with a \"privateKey\" \
                         string"
                    )),
                },
                Err(e) => invalid.push(format!("{CDN_KEY_SECRET_ARN}: {e}")),
            }
        }
        if invalid.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                missing: Vec::new(),
                invalid,
            })
        }
    }
}

/// The secret's current string value. Errors name the secret and what went wrong (not found,
/// access denied, a binary secret), never a value.
async fn secret_string(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<String, String> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| format!("cannot read secret {arn}: {}", DisplayErrorContext(&e)))?;
    out.secret_string()
        .map(str::to_string)
        .ok_or_else(|| format!("secret {arn} has no string value (a binary secret?)"))
}

/// `privateKey` of the CDN key secret's JSON, the same secret whose `publicKey` the template
/// gives CloudFront.
fn private_key(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.get("privateKey")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::private_key;

    #[test]
    fn the_private_key_is_read_from_the_json_and_nothing_else_is_taken() {
        let pem = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n";
        let json = serde_json::json!({"publicKey": "pub", "privateKey": pem}).to_string();
        assert_eq!(private_key(&json).as_deref(), Some(pem));
        assert_eq!(private_key(pem), None);
        assert_eq!(private_key(r#"{"publicKey": "pub"}"#), None);
        assert_eq!(private_key(r#"{"privateKey": 7}"#), None);
    }
}
