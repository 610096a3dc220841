//! Signing keys read from Secrets Manager when the transform function starts
//! (`Config::read_secrets`), against moto's Secrets Manager through the real SDK client: what
//! is read, and that every way it can go wrong is named without quoting a secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use aws::Config;
use aws::config::{
    CDN_KEY_PAIR_ID, CDN_KEY_SECRET_ARN, CDN_PRIVATE_KEY, LINK_KEYS, LINK_KEYS_SECRET_ARN,
};
use serde_json::json;

const LINK_SECRET: &str = "a-link-secret-of-thirty-two-bytes-or-more";
const KEY_PAIR_ID: &str = "K2JCJMDEHXQW5F";

fn config(extra: &[(&str, &str)]) -> Result<Config, aws::ConfigError> {
    let mut env = std::collections::HashMap::from([
        (aws::config::UPLOADS_BUCKET, "u"),
        (aws::config::RENDITIONS_BUCKET, "r"),
        (aws::config::TABLE, "t"),
        (aws::config::ALERTS_TOPIC_ARN, "arn:aws:sns:us-east-1:1:a"),
        (aws::config::EVENTS_TOPIC_ARN, "arn:aws:sns:us-east-1:1:e"),
    ]);
    env.extend(extra.iter().copied());
    Config::from_lookup(|name| env.get(name).map(|v| v.to_string()))
}

#[tokio::test]
async fn keys_named_by_secret_are_read_at_start() {
    let sdk = support::sdk().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let keys = support::rsa_key_pems(2048);
    let link_arn = support::put_secret(&sdk, format!("k2={LINK_SECRET}2,k1={LINK_SECRET}")).await;
    let cdn_arn = support::put_secret(
        &sdk,
        json!({"publicKey": keys["public"], "privateKey": keys["pkcs1"]}).to_string(),
    )
    .await;
    let mut config = config(&[
        (LINK_KEYS_SECRET_ARN, &link_arn),
        (CDN_KEY_PAIR_ID, KEY_PAIR_ID),
        (CDN_KEY_SECRET_ARN, &cdn_arn),
    ])
    .unwrap();
    // Nothing is read before `read_secrets`: the environment names secrets, not keys.
    assert!(config.transforms.link_keys.is_none() && config.transforms.cdn.is_none());
    assert_eq!(
        config.transforms.secrets.link_keys.as_deref(),
        Some(link_arn.as_str())
    );
    config.read_secrets(&sdk).await.unwrap();
    assert_eq!(
        config.transforms.link_keys.as_ref().unwrap().signing_key(),
        "k2"
    );
    assert_eq!(
        config.transforms.cdn.as_ref().unwrap().key_pair_id(),
        KEY_PAIR_ID
    );
    // A value put under the same secret is what the next instance reads.
    client
        .put_secret_value()
        .secret_id(&link_arn)
        .secret_string(format!("k3={LINK_SECRET}3,k2={LINK_SECRET}2"))
        .send()
        .await
        .unwrap();
    let mut next = config_with_link_secret(&link_arn);
    next.read_secrets(&sdk).await.unwrap();
    assert_eq!(next.transforms.link_keys.unwrap().signing_key(), "k3");
}

fn config_with_link_secret(arn: &str) -> Config {
    config(&[(LINK_KEYS_SECRET_ARN, arn)]).unwrap()
}

#[tokio::test]
async fn unreadable_or_unusable_secrets_are_named_and_never_quoted() {
    let sdk = support::sdk().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let weak = support::rsa_key_pems(1024);
    let short_arn = support::put_secret(&sdk, "k1=short-secret").await;
    let not_json_arn = support::put_secret(&sdk, "-----BEGIN PRIVATE KEY-----\nnot json").await;
    let weak_arn = support::put_secret(
        &sdk,
        json!({"publicKey": weak["public"], "privateKey": weak["pkcs8"]}).to_string(),
    )
    .await;
    let binary_arn = client
        .create_secret()
        .name(support::unique("binary"))
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(
            b"k1=x".to_vec(),
        ))
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let absent_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:absent-AbCdEf";

    let read = |link: String, cdn: String| {
        let sdk = sdk.clone();
        async move {
            let mut c = config(&[
                (LINK_KEYS_SECRET_ARN, &link),
                (CDN_KEY_PAIR_ID, KEY_PAIR_ID),
                (CDN_KEY_SECRET_ARN, &cdn),
            ])
            .unwrap();
            c.read_secrets(&sdk).await.unwrap_err().to_string()
        }
    };
    // Both problems at once, each under its variable and secret.
    let e = read(short_arn.clone(), not_json_arn.clone()).await;
    assert!(
        e.contains(&format!("{LINK_KEYS_SECRET_ARN}: secret {short_arn}")),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{CDN_KEY_SECRET_ARN}: secret {not_json_arn} is not JSON with a \"privateKey\""
        )),
        "{e}"
    );
    assert!(
        !e.contains("short-secret") && !e.contains("not json"),
        "{e}"
    );

    let e = read(absent_arn.to_string(), weak_arn.clone()).await;
    assert!(
        e.contains(&format!(
            "{LINK_KEYS_SECRET_ARN}: cannot read secret {absent_arn}"
        )),
        "{e}"
    );
    assert!(e.contains("ResourceNotFound"), "{e}");
    assert!(
        e.contains(&format!("{CDN_KEY_SECRET_ARN}: secret {weak_arn}")),
        "{e}"
    );
    assert!(e.contains("2048"), "{e}");
    assert!(!e.contains("PRIVATE KEY"), "{e}");

    let e = read(binary_arn.clone(), binary_arn.clone()).await;
    for name in [LINK_KEYS_SECRET_ARN, CDN_KEY_SECRET_ARN] {
        assert!(
            e.contains(&format!("{name}: secret {binary_arn} has no string value")),
            "{e}"
        );
    }
    // JSON whose privateKey is no key: named, the value not quoted.
    let garbled_arn = support::put_secret(
        &sdk,
        json!({"publicKey": "p", "privateKey": "garbled-key-material"}).to_string(),
    )
    .await;
    let link_arn = support::put_secret(&sdk, format!("k1={LINK_SECRET}")).await;
    let e = read(link_arn, garbled_arn.clone()).await;
    assert!(
        e.contains(&format!(
            "{CDN_KEY_SECRET_ARN}: secret {garbled_arn}: the private key is not PEM"
        )),
        "{e}"
    );
    assert!(
        !e.contains("garbled-key-material") && !e.contains(LINK_KEYS_SECRET_ARN),
        "{e}"
    );
}

#[test]
fn a_key_and_its_secret_are_one_or_the_other() {
    let link_arn = "arn:aws:secretsmanager:us-east-1:1:secret:l";
    let cdn_arn = "arn:aws:secretsmanager:us-east-1:1:secret:c";
    let link_keys = format!("k1={LINK_SECRET}");
    let pem = "-----BEGIN PRIVATE KEY-----\nsecret-key-material";
    let cases: [(Vec<(&str, &str)>, String); 6] = [
        (
            vec![(LINK_KEYS, &link_keys), (LINK_KEYS_SECRET_ARN, link_arn)],
            format!("{LINK_KEYS} and {LINK_KEYS_SECRET_ARN} are both set"),
        ),
        (
            vec![
                (CDN_KEY_PAIR_ID, KEY_PAIR_ID),
                (CDN_PRIVATE_KEY, pem),
                (CDN_KEY_SECRET_ARN, cdn_arn),
            ],
            format!("{CDN_PRIVATE_KEY} and {CDN_KEY_SECRET_ARN} are both set"),
        ),
        (
            vec![(CDN_PRIVATE_KEY, pem), (CDN_KEY_SECRET_ARN, cdn_arn)],
            format!("{CDN_PRIVATE_KEY} and {CDN_KEY_SECRET_ARN} are both set"),
        ),
        (
            vec![(CDN_PRIVATE_KEY, pem)],
            format!("{CDN_PRIVATE_KEY} is set without {CDN_KEY_PAIR_ID}"),
        ),
        (
            vec![(CDN_KEY_SECRET_ARN, cdn_arn)],
            format!("{CDN_KEY_SECRET_ARN} is set without {CDN_KEY_PAIR_ID}"),
        ),
        (
            vec![(CDN_KEY_PAIR_ID, KEY_PAIR_ID)],
            format!("{CDN_KEY_PAIR_ID} is set without {CDN_PRIVATE_KEY} or {CDN_KEY_SECRET_ARN}"),
        ),
    ];
    for (extra, expected) in cases {
        let e = config(&extra).unwrap_err().to_string();
        assert!(e.contains(&expected), "{e}");
        assert!(!e.contains(LINK_SECRET), "{e}");
        assert!(!e.contains("secret-key-material"), "{e}");
    }
    // Blank counts as unset, as for every variable: a key pair ID with a blank secret ARN is
    // half a pair, and a blank link-keys ARN is no links.
    let e = config(&[(CDN_KEY_PAIR_ID, KEY_PAIR_ID), (CDN_KEY_SECRET_ARN, "  ")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("{CDN_KEY_PAIR_ID} is set without")),
        "{e}"
    );
    let blank = config(&[(LINK_KEYS_SECRET_ARN, "")]).unwrap();
    assert!(blank.transforms.secrets.is_empty() && blank.transforms.link_keys.is_none());
}
