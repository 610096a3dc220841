//! The HTTP API as a Lambda function behind API Gateway (REST, Cognito authorizer): the same
//! axum Router `imgpipe serve` runs, over DynamoDB and S3, with callers taken from the claims
//! the authorizer verified (`aws::api_state`) and CORS for `IMGPIPE_API_ALLOW_ORIGIN`
//! (`aws::apigw::app`). Configuration comes from the same `IMGPIPE_*` variables as the steps,
//! every missing one named before the runtime starts, and signing keys from the Secrets Manager
//! secrets they name (`aws::Config::read_secrets`).
//!
//! The template sets `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH`: without it lambda_http prefixes
//! REST API paths with the stage (`/dev/v1/images`), which no route matches.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    aws::lambda::init_tracing();
    let mut config = aws::Config::from_env().inspect_err(|e| {
        tracing::error!(error = %e, "cannot start");
    })?;
    if std::env::var_os("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH").is_none() {
        tracing::warn!(
            "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH is unset: paths will carry the stage and match no route"
        );
    }
    let origin = std::env::var(aws::apigw::ALLOW_ORIGIN).ok();
    let sdk = aws::sdk_config().await;
    // Signing keys named by secret ARN (the template's way) are read once, here.
    config
        .read_secrets(&sdk)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    let app = aws::apigw::app(aws::api_state(&config, &sdk), origin.as_deref())
        .inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    lambda_http::run(app).await
}
