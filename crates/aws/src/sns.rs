//! The notifier on SNS: completions to the events topic, rejections and failures to the
//! alerts topic, with message attributes subscribers can filter on.

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;
use pipeline::PortError;
use pipeline::model::{Event, EventKind};
use pipeline::ports::Notifier;

use crate::errors::port_error;

/// SNS rejects longer subjects.
const MAX_SUBJECT: usize = 100;

#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: Client,
    alerts_topic_arn: String,
    events_topic_arn: String,
}

impl SnsNotifier {
    pub fn new(client: Client, alerts_topic_arn: String, events_topic_arn: String) -> Self {
        SnsNotifier {
            client,
            alerts_topic_arn,
            events_topic_arn,
        }
    }

    pub fn topic_for(&self, event: &Event) -> &str {
        if event.kind.is_alert() {
            &self.alerts_topic_arn
        } else {
            &self.events_topic_arn
        }
    }
}

/// A one-line subject within SNS's limits (ASCII, no control characters, under 100).
pub fn subject(event: &Event) -> String {
    let what = match event.kind {
        EventKind::NotAnnounced => "COMPLETE, completion not announced".to_string(),
        EventKind::Reprocessed => "re-rendered".to_string(),
        EventKind::NotReprocessed => "not re-rendered, renditions kept".to_string(),
        _ => event.status.to_string(),
    };
    format!("imgpipe: image {} {what}", event.image_id)
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .take(MAX_SUBJECT)
        .collect()
}

/// String attributes for subscription filter policies; SNS refuses empty values, so those
/// are left out.
pub fn attributes(event: &Event) -> Vec<(&'static str, String)> {
    let kind = serde_json::to_value(event.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut attrs = vec![
        ("kind", kind),
        ("status", event.status.as_str().to_string()),
        ("owner", event.owner.clone()),
        ("imageId", event.image_id.clone()),
    ];
    if let Some(e) = &event.error {
        attrs.push(("errorType", e.kind.clone()));
    }
    attrs.retain(|(_, v)| !v.is_empty());
    attrs
}

#[async_trait]
impl Notifier for SnsNotifier {
    async fn publish(&self, event: &Event) -> Result<(), PortError> {
        let topic = self.topic_for(event);
        let what = format!("sns publish {topic} ({})", event.image_id);
        let message = serde_json::to_string(event)
            .map_err(|e| PortError::Permanent(format!("{what}: {e}")))?;
        let mut request = self
            .client
            .publish()
            .topic_arn(topic)
            .message(message)
            .subject(subject(event));
        for (name, value) in attributes(event) {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| PortError::Permanent(format!("{what}: {e}")))?;
            request = request.message_attributes(name, value);
        }
        request.send().await.map_err(|e| port_error(&what, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use pipeline::model::{ErrorInfo, EventKind, Status};

    #[test]
    fn subject_and_attributes_describe_the_event() {
        let event = Event {
            kind: EventKind::Rejected,
            image_id: "é".repeat(200),
            owner: String::new(),
            status: Status::Rejected,
            source_key: "uploads/u/i/a.jpg".into(),
            renditions: Vec::new(),
            error: Some(ErrorInfo {
                kind: "InvalidImage".into(),
                message: "truncated".into(),
            }),
            execution_id: None,
            at: Utc::now(),
        };
        let s = subject(&event);
        assert!(s.starts_with("imgpipe: image ??"));
        assert_eq!(s.chars().count(), MAX_SUBJECT);
        let attrs = attributes(&event);
        assert!(attrs.contains(&("kind", "rejected".into())));
        assert!(attrs.contains(&("errorType", "InvalidImage".into())));
        assert!(attrs.iter().all(|(k, _)| *k != "owner"));
    }
}
