//! The CloudFront side of signed links, each checked against something independent of it:
//! the signed URLs against botocore's CloudFrontSigner over Python's cryptography (PKCS#1 v1.5
//! signatures are deterministic, so the URLs must agree byte for byte), the template's Accept
//! function run by node against the API's own format choice, and the template's wiring
//! against the names the code reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Only the Python helpers of the support module: no moto here.
#[allow(dead_code)]
mod support;

use std::path::PathBuf;
use std::process::Command;

use api::CdnSigner;
use api::cdn::CdnKeyError;
use imaging::Format;
use serde_json::Value;

const KEY_PAIR_ID: &str = "K2JCJMDEHXQW5F";
const KEY: &str = "renditions/4f1b2c3d-5e6f/01JD8X3Q7V4M2N6P9R5T0WZ8KB/t/0123456789abcdef.webp";

fn template() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
    support::python_json(
        "import json, sys\nfrom cfnlint.decode import cfn_yaml\n\
         print(json.dumps(cfn_yaml.load(sys.argv[1])))",
        &[path.to_str().unwrap()],
    )
}

/// botocore makes the URL for the same key, address and expiry; cryptography checks the
/// signature of ours against the canned policy, and that it does not pass for another object.
/// Prints {"url", "other_verifies"}.
const BOTOCORE: &str = r#"
import base64, datetime, json, sys
from botocore.signers import CloudFrontSigner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
pem, address, expires, key_id, ours = sys.argv[1:6]
key = serialization.load_pem_private_key(pem.encode(), None)
signer = CloudFrontSigner(key_id, lambda m: key.sign(m, padding.PKCS1v15(), hashes.SHA256()))
when = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=int(expires))
url = signer.generate_presigned_url(address, date_less_than=when) + "&Hash-Algorithm=SHA256"
query = dict(p.split("=", 1) for p in ours.split("?", 1)[1].split("&"))
unb64 = lambda s: base64.b64decode(s.replace("-", "+").replace("_", "=").replace("~", "/"))
signature = unb64(query["Signature"])
public = key.public_key()
public.verify(signature, signer.build_policy(address, when).encode(), padding.PKCS1v15(), hashes.SHA256())
try:
    other = address.replace("/t/", "/") + "?x=" + address
    public.verify(signature, signer.build_policy(other, when).encode(), padding.PKCS1v15(), hashes.SHA256())
    other_verifies = True
except InvalidSignature:
    other_verifies = False
print(json.dumps({"url": url, "other_verifies": other_verifies}))
"#;

#[test]
fn signed_urls_are_what_botocore_makes_and_verify() {
    let keys = support::rsa_key_pems(2048);
    let expires = 1_900_000_800;
    let host = "d111111abcdef8.cloudfront.net";
    let pkcs8 = CdnSigner::new(KEY_PAIR_ID, keys["pkcs8"].as_str().unwrap()).unwrap();
    let ours = pkcs8.sign(host, KEY, expires).unwrap();
    // The same key written the older way signs the same.
    let pkcs1 = CdnSigner::new(KEY_PAIR_ID, keys["pkcs1"].as_str().unwrap()).unwrap();
    assert_eq!(pkcs1.sign(host, KEY, expires).unwrap(), ours);

    let address = format!("https://{host}/{KEY}");
    let theirs = support::python_json(
        BOTOCORE,
        &[
            keys["pkcs8"].as_str().unwrap(),
            &address,
            &expires.to_string(),
            KEY_PAIR_ID,
            &ours,
        ],
    );
    assert_eq!(theirs["url"], ours.as_str());
    assert_eq!(theirs["other_verifies"], false, "one URL opens one object");
    assert!(ours.starts_with(&format!("{address}?Expires={expires}&Signature=")));
    assert!(ours.ends_with(&format!("&Key-Pair-Id={KEY_PAIR_ID}&Hash-Algorithm=SHA256")));
    // Nothing is signed for what is not a host name.
    for bad in ["", "evil.example/x", "host:443", "*.cloudfront.net"] {
        assert_eq!(pkcs8.sign(bad, KEY, expires), None, "{bad}");
    }
}

#[test]
fn keys_cloudfront_would_not_take_are_refused_by_name() {
    for bits in [1024, 4096] {
        let keys = support::rsa_key_pems(bits);
        let e = CdnSigner::new(KEY_PAIR_ID, keys["pkcs8"].as_str().unwrap()).unwrap_err();
        assert!(
            matches!(e, CdnKeyError::Size(b) if b == bits as usize)
                || e == CdnKeyError::UnsupportedSize,
            "{bits}: {e:?}"
        );
        assert!(e.to_string().contains("2048"), "{e}");
    }
    let ec = support::python_json(
        r#"
import json
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric import ec
k = ec.generate_private_key(ec.SECP256R1())
print(json.dumps({
    "pkcs8": k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()).decode(),
    "sec1": k.private_bytes(s.Encoding.PEM, s.PrivateFormat.TraditionalOpenSSL, s.NoEncryption()).decode(),
}))
"#,
        &[],
    );
    for form in ["pkcs8", "sec1"] {
        let e = CdnSigner::new(KEY_PAIR_ID, ec[form].as_str().unwrap()).unwrap_err();
        assert_eq!(e, CdnKeyError::NotRsa, "{form}");
    }
    // The public half where the private one belongs.
    let keys = support::rsa_key_pems(2048);
    let e = CdnSigner::new(KEY_PAIR_ID, keys["public"].as_str().unwrap()).unwrap_err();
    assert_eq!(e, CdnKeyError::NotPem);
    // Nothing secret in the messages.
    let pem = keys["pkcs8"].as_str().unwrap();
    let e = CdnSigner::new("k2jc", pem).unwrap_err();
    assert_eq!(e, CdnKeyError::KeyPairId);
    assert!(!e.to_string().contains("BEGIN"));
}

/// Accept headers browsers and clients send, and edge cases of the q rules.
const ACCEPTS: &[&str] = &[
    "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
    "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,\
     image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
    "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5",
    "image/webp,image/apng,image/*,*/*;q=0.8",
    "*/*",
    "",
    "text/html",
    "IMAGE/AVIF",
    "image/avif;q=0,image/webp",
    "image/webp;q=0.0",
    "image/avif; q=0 , image/webp;q=0.5",
    "image/avif;q=,image/webp;q=0.001",
    "image/avif;q=abc",
];

fn code_of(t: &Value) -> String {
    t["Resources"]["CdnAcceptFunction"]["Properties"]["FunctionCode"]
        .as_str()
        .expect("CdnAcceptFunction has inline code")
        .to_string()
}

#[test]
fn the_edge_function_keeps_what_fmt_auto_reads_and_passes_the_host_on() {
    let code = code_of(&template());
    let harness = format!(
        "{code}\nconst accepts = JSON.parse(process.argv[1]);\n\
         const context = {{ distributionDomainName: 'd1.cloudfront.net' }};\n\
         const run = (headers) => handler({{ context, request: {{ headers }} }}).headers;\n\
         console.log(JSON.stringify({{\n\
           accepts: [null].concat(accepts).map((a) => {{\n\
             const out = run(a === null ? {{}} : {{ accept: {{ value: a }} }});\n\
             return out.accept ? out.accept.value : null;\n\
           }}),\n\
           alias: run({{ host: {{ value: 'img.example.com' }},\n\
                         'x-imgpipe-host': {{ value: 'evil.example' }} }})['x-imgpipe-host'],\n\
           bare: run({{}})['x-imgpipe-host'],\n\
         }}));"
    );
    let out = Command::new("node")
        .arg("-e")
        .arg(&harness)
        .arg(serde_json::to_string(ACCEPTS).unwrap())
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The host the viewer used goes to the API, whatever the viewer put in the header itself.
    assert_eq!(printed["alias"]["value"], "img.example.com");
    assert_eq!(printed["bare"]["value"], "d1.cloudfront.net");
    let normalised: Vec<Option<String>> =
        serde_json::from_value(printed["accepts"].clone()).unwrap();
    let raw: Vec<Option<&str>> = std::iter::once(None)
        .chain(ACCEPTS.iter().map(|a| Some(*a)))
        .collect();
    assert_eq!(normalised.len(), raw.len());
    let mut variants = std::collections::BTreeSet::new();
    for (raw, normal) in raw.iter().zip(&normalised) {
        for alpha in [false, true] {
            assert_eq!(
                pipeline::transform::auto_format(*raw, alpha),
                pipeline::transform::auto_format(normal.as_deref(), alpha),
                "Accept {raw:?} normalised to {normal:?}"
            );
        }
        variants.insert(normal.clone());
    }
    // One cache variant per choice, not per browser.
    assert_eq!(
        variants,
        [
            None,
            Some("image/avif,image/webp".to_string()),
            Some("image/avif".to_string()),
            Some("image/webp".to_string()),
        ]
        .into_iter()
        .collect(),
    );
    // Sanity of the cases themselves: each format is chosen by some header.
    let chosen: Vec<Format> = raw
        .iter()
        .map(|a| pipeline::transform::auto_format(*a, false))
        .collect();
    assert!(chosen.contains(&Format::Webp) && chosen.contains(&Format::Jpeg));
}

#[test]
fn the_distribution_is_wired_to_what_the_code_reads() {
    let t = template();
    let r = &t["Resources"];
    let config = &r["CdnDistribution"]["Properties"]["DistributionConfig"];
    let origins = config["Origins"].as_array().unwrap();
    let origin = |id: &str| origins.iter().find(|o| o["Id"] == id).unwrap();

    // /t/* goes to the API, which learns from this header that the link came through.
    let api_origin = origin("api");
    let header = api_origin["OriginCustomHeaders"][0]["HeaderName"]
        .as_str()
        .unwrap();
    assert!(header.eq_ignore_ascii_case(api::transform::CDN_HEADER));
    let links = &config["CacheBehaviors"][0];
    assert_eq!(links["PathPattern"], "t/*");
    assert_eq!(links["TargetOriginId"], "api");
    let policy =
        &r[links["CachePolicyId"]["Ref"].as_str().unwrap()]["Properties"]["CachePolicyConfig"];
    assert_eq!(policy["MaxTTL"], api::transform::CDN_REDIRECT_MAX_AGE_SECS);
    let key = &policy["ParametersInCacheKeyAndForwardedToOrigin"];
    assert_eq!(
        key["QueryStringsConfig"]["QueryStrings"],
        serde_json::json!(["exp", "sig"])
    );
    let headers = key["HeadersConfig"]["Headers"].as_array().unwrap();
    assert_eq!(headers.len(), 2);
    assert_eq!(headers[0], "Accept");
    assert!(
        headers[1]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(api::transform::CDN_HOST_HEADER)
    );
    assert!(code_of(&t).contains(&format!("'{}'", api::transform::CDN_HOST_HEADER)));
    // Refusals are not kept at the edge for other viewers.
    let errors = config["CustomErrorResponses"].as_array().unwrap();
    for code in [403, 503] {
        assert!(
            errors
                .iter()
                .any(|e| e["ErrorCode"] == code && e["ErrorCachingMinTTL"] == 0),
            "{code}"
        );
    }
    assert_eq!(
        links["FunctionAssociations"][0]["EventType"],
        "viewer-request"
    );

    // Everything else is the renditions bucket, through origin access control, on signed
    // URLs only; the bucket lets that distribution read renditions/ and nothing else.
    let default = &config["DefaultCacheBehavior"];
    assert_eq!(default["TargetOriginId"], "renditions");
    assert_eq!(default["TrustedKeyGroups"][0]["Ref"], "CdnKeyGroup");
    assert!(origin("renditions")["OriginAccessControlId"].is_object());
    let statements = r["RenditionsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    let cdn_read = statements
        .iter()
        .find_map(|s| s.get("Fn::If").filter(|i| i[0] == "HasCdn"))
        .expect("a statement for the distribution");
    assert_eq!(
        cdn_read[1]["Principal"]["Service"],
        "cloudfront.amazonaws.com"
    );
    assert_eq!(cdn_read[1]["Action"], "s3:GetObject");
    assert!(
        cdn_read[1]["Condition"]
            .to_string()
            .contains("CdnDistribution"),
        "{}",
        cdn_read[1]
    );

    // The transform function gets the key pair the distribution trusts: its ID, and the
    // secret it reads the private key from when it starts, never the key itself.
    let function = &r["TransformFunction"]["Properties"];
    let env = &function["Environment"]["Variables"];
    for name in [
        aws::config::CDN_KEY_PAIR_ID,
        aws::config::CDN_KEY_SECRET_ARN,
        aws::config::LINK_KEYS_SECRET_ARN,
    ] {
        assert!(env.get(name).is_some(), "TransformFunction lacks {name}");
    }
    for name in [aws::config::CDN_PRIVATE_KEY, aws::config::LINK_KEYS] {
        assert!(env.get(name).is_none(), "TransformFunction has {name}");
    }
    assert!(
        !env.to_string().contains("resolve:secretsmanager"),
        "a secret is resolved into the environment: {env}"
    );
    let secret = &env[aws::config::CDN_KEY_SECRET_ARN]["Fn::If"][1]["Fn::If"];
    assert_eq!(
        (secret[1]["Ref"].as_str(), secret[2]["Ref"].as_str()),
        (Some("CdnSecondKeySecretArn"), Some("CdnKeySecretArn"))
    );
    // ... which its role may read, and only those secrets.
    let policies = function["Policies"].to_string();
    let statements: Vec<Value> = function["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["Statement"].as_array().cloned().unwrap_or_default())
        .collect();
    let conditional = |condition: &str| {
        statements
            .iter()
            .find_map(|s| {
                let cond = &s["Fn::If"];
                (cond[0] == condition).then(|| (cond[1].clone(), cond[2].clone()))
            })
            .unwrap_or_else(|| panic!("no statement under {condition}: {policies}"))
    };
    let (read, otherwise) = conditional("HasSigningKeys");
    assert_eq!(otherwise["Ref"], "AWS::NoValue");
    assert_eq!(read["Action"], "secretsmanager:GetSecretValue");
    // Each secret only when its parameter is set: an empty ARN would make the policy invalid.
    let resources: Vec<Value> = read["Resource"].as_array().unwrap().clone();
    let expected = [
        ("HasLinkKeys", "LinkKeysSecretArn"),
        ("HasFirstCdnKey", "CdnKeySecretArn"),
        ("HasSecondCdnKey", "CdnSecondKeySecretArn"),
    ];
    assert_eq!(resources.len(), expected.len(), "{resources:?}");
    for (resource, (condition, param)) in resources.iter().zip(expected) {
        let branch = &resource["Fn::If"];
        assert_eq!(branch[0], condition, "{resource}");
        assert_eq!(branch[1]["Ref"], param, "{resource}");
        assert_eq!(branch[2]["Ref"], "AWS::NoValue", "{resource}");
    }
    let conditions = &t["Conditions"];
    let any = conditions["HasSigningKeys"]["Fn::Or"].to_string();
    assert!(
        any.contains("\"HasLinkKeys\"") && any.contains("\"HasCdn\""),
        "{any}"
    );
    // A customer-managed KMS key may decrypt them, through Secrets Manager only.
    let (decrypt, _) = conditional("HasSigningKeysKmsKey");
    assert_eq!(decrypt["Action"], "kms:Decrypt");
    assert_eq!(decrypt["Resource"]["Ref"], "SigningKeysKmsKeyArn");
    assert!(
        decrypt["Condition"]["StringEquals"]["kms:ViaService"]
            .to_string()
            .contains("secretsmanager."),
        "{decrypt}"
    );
    // Only full ARNs: the role's resource must be the secret's own ARN.
    let params = &t["Parameters"];
    for param in [
        "LinkKeysSecretArn",
        "CdnKeySecretArn",
        "CdnSecondKeySecretArn",
    ] {
        let pattern = params[param]["AllowedPattern"].as_str().unwrap();
        assert!(
            pattern.contains(":secret:") && pattern.contains("{6}"),
            "{pattern}"
        );
    }
    // Either slot of the key group can be the one that signs.
    let signing = &env[aws::config::CDN_KEY_PAIR_ID]["Fn::If"][1]["Fn::If"];
    assert_eq!(signing[0], "SignWithSecondCdnKey");
    assert_eq!(
        (signing[1]["Ref"].as_str(), signing[2]["Ref"].as_str()),
        (Some("CdnSecondPublicKey"), Some("CdnPublicKey"))
    );
    let group = r["CdnKeyGroup"]["Properties"]["KeyGroupConfig"]["Items"].to_string();
    assert!(group.contains("\"CdnPublicKey\"") && group.contains("\"CdnSecondPublicKey\""));
}

#[test]
fn configuration_takes_both_halves_or_neither() {
    let keys = support::rsa_key_pems(2048);
    let pem = keys["pkcs8"].as_str().unwrap().to_string();
    let base: Vec<(&str, String)> = vec![
        (aws::config::UPLOADS_BUCKET, "u".into()),
        (aws::config::RENDITIONS_BUCKET, "r".into()),
        (aws::config::TABLE, "t".into()),
        (
            aws::config::ALERTS_TOPIC_ARN,
            "arn:aws:sns:us-east-1:1:a".into(),
        ),
        (
            aws::config::EVENTS_TOPIC_ARN,
            "arn:aws:sns:us-east-1:1:e".into(),
        ),
    ];
    let load = |extra: &[(&str, &str)]| {
        let env: std::collections::HashMap<String, String> = base
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        aws::Config::from_lookup(|name| env.get(name).cloned())
    };
    let both = load(&[
        (aws::config::CDN_KEY_PAIR_ID, KEY_PAIR_ID),
        (aws::config::CDN_PRIVATE_KEY, &pem),
    ])
    .unwrap();
    assert_eq!(
        both.transforms.cdn.as_ref().unwrap().key_pair_id(),
        KEY_PAIR_ID
    );
    assert!(load(&[]).unwrap().transforms.cdn.is_none());
    let half = load(&[(aws::config::CDN_KEY_PAIR_ID, KEY_PAIR_ID)])
        .unwrap_err()
        .to_string();
    assert!(half.contains(aws::config::CDN_PRIVATE_KEY), "{half}");
    let bad = load(&[
        (aws::config::CDN_KEY_PAIR_ID, KEY_PAIR_ID),
        (
            aws::config::CDN_PRIVATE_KEY,
            "-----BEGIN PRIVATE KEY-----\nnope",
        ),
    ])
    .unwrap_err()
    .to_string();
    assert!(bad.contains(aws::config::CDN_PRIVATE_KEY), "{bad}");
    assert!(!bad.contains("nope"), "{bad}");
}
