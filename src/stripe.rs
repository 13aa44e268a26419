//! The few Stripe API calls frontdesk makes, over reqwest: form-encoded requests with an
//! `Idempotency-Key` on every write, so a retried admin action is never applied twice. (The
//! design named async-stripe; five calls do not justify its generated API surface in a build that
//! runs on two cores. See ARCHITECTURE.md.)

use crate::config::Secret;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StripeError {
    #[error("stripe unreachable: {0}")]
    Transport(String),
    #[error("stripe answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("stripe's answer is not what was expected: {0}")]
    Unexpected(String),
}

#[derive(Clone)]
pub struct Stripe {
    http: reqwest::Client,
    base: String,
    key: Secret,
}

/// The parts of a subscription a seat change needs.
#[derive(Debug, Clone)]
pub struct SubscriptionItem {
    pub item_id: String,
    pub quantity: u32,
    pub price_id: String,
}

impl Stripe {
    pub fn new(base: &str, key: Secret) -> Result<Stripe, StripeError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| StripeError::Transport(e.to_string()))?;
        Ok(Stripe {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<serde_json::Value, StripeError> {
        let key = String::from_utf8_lossy(self.key.expose()).into_owned();
        let resp = req
            .bearer_auth(key)
            .send()
            .await
            .map_err(|e| StripeError::Transport(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| StripeError::Unexpected(e.without_url().to_string()))?;
        if !(200..300).contains(&status) {
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("no message")
                .chars()
                .take(300)
                .collect();
            return Err(StripeError::Api { status, message });
        }
        Ok(body)
    }

    /// Whether a price exists and is active (checked at start for every required price).
    pub async fn price_active(&self, price: &str) -> Result<bool, StripeError> {
        match self
            .send(self.http.get(format!("{}/v1/prices/{price}", self.base)))
            .await
        {
            Ok(v) => Ok(v["active"].as_bool().unwrap_or(false)),
            Err(StripeError::Api { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn subscription_item(
        &self,
        subscription: &str,
    ) -> Result<SubscriptionItem, StripeError> {
        let v = self
            .send(
                self.http
                    .get(format!("{}/v1/subscriptions/{subscription}", self.base)),
            )
            .await?;
        let item = &v["items"]["data"][0];
        Ok(SubscriptionItem {
            item_id: item["id"]
                .as_str()
                .ok_or_else(|| StripeError::Unexpected("no item".into()))?
                .to_owned(),
            quantity: item["quantity"]
                .as_u64()
                .and_then(|q| u32::try_from(q).ok())
                .unwrap_or(0),
            price_id: item["price"]["id"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// `POST /v1/subscriptions/{id}` with form parameters and an idempotency key.
    pub async fn update_subscription(
        &self,
        subscription: &str,
        params: &[(&str, String)],
        idempotency_key: &str,
    ) -> Result<serde_json::Value, StripeError> {
        self.send(
            self.http
                .post(format!("{}/v1/subscriptions/{subscription}", self.base))
                .header("Idempotency-Key", idempotency_key)
                .form(params),
        )
        .await
    }
}
