//! The closed list of event types an endpoint can subscribe to.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A platform event type. Outbound events are limited to this list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    LeadWon,
    LeadLost,
    ProposalAccepted,
    MeetingBooked,
    InvoicePaid,
    PaymentFailed,
    ProjectCompleted,
    TaskCompleted,
    ClientCreated,
    BillingSuspended,
    SurveySubmitted,
}

/// A name that is not one of the platform's event types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type '{0}'")]
pub struct UnknownEventType(pub String);

impl EventType {
    /// Every event type, in the order the API lists them.
    pub const ALL: [EventType; 11] = [
        EventType::LeadWon,
        EventType::LeadLost,
        EventType::ProposalAccepted,
        EventType::MeetingBooked,
        EventType::InvoicePaid,
        EventType::PaymentFailed,
        EventType::ProjectCompleted,
        EventType::TaskCompleted,
        EventType::ClientCreated,
        EventType::BillingSuspended,
        EventType::SurveySubmitted,
    ];

    /// The wire name (`invoice.paid`, `lead_won`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::LeadWon => "lead_won",
            EventType::LeadLost => "lead_lost",
            EventType::ProposalAccepted => "proposal_accepted",
            EventType::MeetingBooked => "meeting.booked",
            EventType::InvoicePaid => "invoice.paid",
            EventType::PaymentFailed => "payment_failed",
            EventType::ProjectCompleted => "project.completed",
            EventType::TaskCompleted => "task.completed",
            EventType::ClientCreated => "client.created",
            EventType::BillingSuspended => "billing.suspended",
            EventType::SurveySubmitted => "survey.submitted",
        }
    }

    /// What the event means, for `GET /v1/event-types`.
    pub fn description(self) -> &'static str {
        match self {
            EventType::LeadWon => "A lead was won",
            EventType::LeadLost => "A lead was lost",
            EventType::ProposalAccepted => "A proposal was accepted",
            EventType::MeetingBooked => "A meeting was booked",
            EventType::InvoicePaid => "An invoice was paid",
            EventType::PaymentFailed => "A payment failed",
            EventType::ProjectCompleted => "A project was completed",
            EventType::TaskCompleted => "A task was completed",
            EventType::ClientCreated => "A client was created",
            EventType::BillingSuspended => "Billing was suspended",
            EventType::SurveySubmitted => "A survey was submitted",
        }
    }
}

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_string()))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
        }
    }

    #[test]
    fn unknown_names_are_rejected() {
        assert_eq!(
            "invoice.created".parse::<EventType>(),
            Err(UnknownEventType("invoice.created".into()))
        );
        assert!("Invoice.Paid".parse::<EventType>().is_err());
    }
}
