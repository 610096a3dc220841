//! One classifier for S3, DynamoDB and SNS failures, so every adapter agrees on what is worth
//! retrying (the state machine retries `Transient` only) and what "not found" means.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use pipeline::PortError;

/// Error codes that mean "try again later" whatever their HTTP status.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "SlowDown",
    "TransactionInProgressException",
    "PriorRequestNotComplete",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "KMSThrottlingException",
];

/// Error codes of a missing object. A missing bucket, table or topic is deliberately not here:
/// that is a deployment fault, and reporting it as the image's `NotFound` would hide it.
const NOT_FOUND_CODES: &[&str] = &["NoSuchKey", "NotFound"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    NotFound,
    Transient,
    Permanent,
}

/// Classifies a service's error response by its code and HTTP status.
pub(crate) fn classify_response(code: Option<&str>, status: u16) -> Class {
    match code {
        Some(c) if TRANSIENT_CODES.contains(&c) => Class::Transient,
        Some(c) if NOT_FOUND_CODES.contains(&c) => Class::NotFound,
        _ if status == 429 || status >= 500 => Class::Transient,
        // HEAD responses have no body, so a bare 404 carries no code to tell us more.
        None if status == 404 => Class::NotFound,
        _ => Class::Permanent,
    }
}

pub(crate) fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Class {
    match err {
        SdkError::ServiceError(ctx) => {
            classify_response(ctx.err().code(), ctx.raw().status().as_u16())
        }
        // A request we could not even build will not build on a retry either; a connection
        // that could not be made, timed out or returned garbage may well work next time.
        SdkError::ConstructionFailure(_) => Class::Permanent,
        SdkError::DispatchFailure(d) if d.is_user() => Class::Permanent,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Class::Transient
        }
        _ => Class::Permanent,
    }
}

/// Turns an SDK failure of `what` (e.g. "s3 get uploads/a/b/c.jpg") into a port error whose
/// message names the operation, the error code and the service's message.
pub(crate) fn port_error<E>(what: &str, err: SdkError<E, HttpResponse>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let class = classify(&err);
    let detail = match &err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            match (e.code(), e.message()) {
                (Some(code), Some(msg)) => format!("{code}: {msg}"),
                (Some(code), None) => format!("{code} (HTTP {})", ctx.raw().status().as_u16()),
                _ => format!("HTTP {}", ctx.raw().status().as_u16()),
            }
        }
        _ => DisplayErrorContext(&err).to_string(),
    };
    let message = format!("{what}: {detail}");
    match class {
        Class::NotFound => PortError::NotFound(message),
        Class::Transient => PortError::Transient(message),
        Class::Permanent => PortError::Permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_smithy_types::body::SdkBody;

    fn service(code: Option<&str>, status: u16) -> SdkError<GetObjectError, HttpResponse> {
        let mut meta = ErrorMetadata::builder().message("from the service");
        if let Some(code) = code {
            meta = meta.code(code);
        }
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(GetObjectError::generic(meta.build()), raw)
    }

    #[test]
    fn responses_classify_by_code_then_status() {
        assert_eq!(classify(&service(Some("NoSuchKey"), 404)), Class::NotFound);
        assert_eq!(classify(&service(None, 404)), Class::NotFound);
        assert_eq!(
            classify(&service(Some("NoSuchBucket"), 404)),
            Class::Permanent
        );
        assert_eq!(
            classify(&service(Some("ResourceNotFoundException"), 400)),
            Class::Permanent
        );
        assert_eq!(classify(&service(Some("SlowDown"), 503)), Class::Transient);
        assert_eq!(
            classify(&service(
                Some("ProvisionedThroughputExceededException"),
                400
            )),
            Class::Transient
        );
        assert_eq!(classify(&service(None, 500)), Class::Transient);
        assert_eq!(classify(&service(None, 429)), Class::Transient);
        assert_eq!(
            classify(&service(Some("AccessDenied"), 403)),
            Class::Permanent
        );
        assert_eq!(
            classify(&service(Some("ValidationException"), 400)),
            Class::Permanent
        );
    }

    #[test]
    fn transport_failures_are_transient_and_messages_name_the_operation() {
        let timeout = SdkError::<GetObjectError, HttpResponse>::timeout_error("too slow");
        assert_eq!(classify(&timeout), Class::Transient);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let dispatch = SdkError::<GetObjectError, HttpResponse>::dispatch_failure(
            ConnectorError::io(Box::new(io)),
        );
        let e = port_error("s3 get k", dispatch);
        assert!(
            matches!(&e, PortError::Transient(m) if m.starts_with("s3 get k: ")),
            "{e:?}"
        );
        let construction =
            SdkError::<GetObjectError, HttpResponse>::construction_failure("bad input");
        assert_eq!(classify(&construction), Class::Permanent);

        let e = port_error("s3 get a/b", service(Some("NoSuchKey"), 404));
        assert_eq!(
            e,
            PortError::NotFound("s3 get a/b: NoSuchKey: from the service".into())
        );
    }
}
