//! The OpenFeature provider (feature `openfeature`), driven through the OpenFeature client.
#![cfg(feature = "openfeature")]

use open_feature::provider::{FeatureProvider, ProviderStatus};
use open_feature::{
    Client, EvaluationContext, EvaluationContextFieldValue, EvaluationErrorCode, EvaluationReason,
    FlagMetadataValue, OpenFeature, StructValue, Value,
};

use elvon::features::MemoryStore;
use elvon::openfeature::{ElvonProvider, TrackError, TrackingEventDetails};
use elvon::{Engine, Features, RewardOutcome};

const CONFIG: &str = r#"{"version": "of-3", "slots": [
  {"id": "dark_mode", "variants": [{"id": "off", "payload": false}, {"id": "on", "payload": true}],
   "default": "off",
   "rules": [{"when": {"feature": "plan", "op": "eq", "value": "pro"}, "serve": "on"}]},
  {"id": "max_items", "variants": [{"id": "n", "payload": 42}], "default": "n"},
  {"id": "ratio", "variants": [{"id": "r", "payload": 0.25}], "default": "r"},
  {"id": "color", "variants": [{"id": "c", "payload": "blue"}], "default": "c"},
  {"id": "plain", "variants": [{"id": "v1"}, {"id": "v2"}], "default": "v1",
   "rules": [{"split": {"variants": [{"variant": "v1", "weight": 50}, {"variant": "v2", "weight": 50}]}}]},
  {"id": "layout", "variants": [{"id": "grid", "payload": {"columns": 3, "dense": true, "name": "g",
     "gap": 0.5, "tags": ["a", "b"], "inner": {"x": 1}, "none": null}}], "default": "grid"},
  {"id": "killed", "variants": [{"id": "k", "payload": true}], "default": "k", "killed": true},
  {"id": "hero", "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "default": "a",
   "rules": [{"bandit": {"policy": "thompson", "arms": ["a", "b", "c"]}}]}
]}"#;

fn engine() -> Engine {
    let store = MemoryStore::new();
    store.set("stored-pro", Features::new().with("plan", "pro"));
    let e = Engine::builder().source(store).build();
    e.load_config_json(CONFIG).expect("valid");
    e
}

fn ctx(user: &str) -> EvaluationContext {
    EvaluationContext::default().with_targeting_key(user)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A client bound to its own named provider (tests share the process-wide singleton).
async fn client(name: &str, provider: ElvonProvider) -> Client {
    let mut api = OpenFeature::singleton_mut().await;
    api.set_named_provider(name, provider).await;
    api.create_named_client(name)
}

fn code<T>(r: Result<T, open_feature::EvaluationError>) -> (EvaluationErrorCode, String) {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => (e.code, e.message.unwrap_or_default()),
    }
}

fn meta_str(m: &open_feature::FlagMetadata, k: &str) -> String {
    match m.values.get(k) {
        Some(FlagMetadataValue::String(s)) => s.clone(),
        other => panic!("metadata {k:?} is {other:?}"),
    }
}

#[test]
fn the_default_provider_resolves_every_type_with_variant_reason_and_metadata() {
    runtime().block_on(async {
        let e = engine();
        OpenFeature::singleton_mut()
            .await
            .set_provider(ElvonProvider::new(e.clone()))
            .await;
        let client = OpenFeature::singleton().await.create_client();
        let pro = ctx("u1").with_custom_field("plan", "pro");
        let free = ctx("u1").with_custom_field("plan", "free");

        let d = client
            .get_bool_details("dark_mode", Some(&pro), None)
            .await
            .expect("bool");
        assert!(d.value);
        assert_eq!(d.variant.as_deref(), Some("on"));
        assert_eq!(d.reason, Some(EvaluationReason::TargetingMatch));
        let d = client
            .get_bool_details("dark_mode", Some(&free), None)
            .await
            .expect("bool");
        assert!(!d.value);
        assert_eq!(d.reason, Some(EvaluationReason::Default));
        assert_eq!(meta_str(&d.flag_metadata, "version"), "of-3");
        assert_eq!(meta_str(&d.flag_metadata, "configVersion"), "of-3");
        assert_eq!(meta_str(&d.flag_metadata, "elvonReason"), "default");
        assert_eq!(
            d.flag_metadata.values.get("propensity"),
            Some(&FlagMetadataValue::Float(1.0))
        );
        let id = meta_str(&d.flag_metadata, "decisionId");
        assert_eq!(id.len(), 32, "{id}");
        assert!(!d.flag_metadata.values.contains_key("modelVersion"));

        let d = client
            .get_int_details("max_items", Some(&free), None)
            .await
            .expect("int");
        assert_eq!((d.value, d.variant.as_deref()), (42, Some("n")));
        let d = client
            .get_float_details("ratio", Some(&free), None)
            .await
            .expect("float");
        assert_eq!(d.value, 0.25);
        // An integer payload resolves as a float too.
        let d = client
            .get_float_details("max_items", Some(&free), None)
            .await
            .expect("float");
        assert_eq!(d.value, 42.0);
        let d = client
            .get_string_details("color", Some(&free), None)
            .await
            .expect("string");
        assert_eq!(d.value, "blue");
        // A variant without a payload: its id is the (string) value; a split's reason.
        let d = client
            .get_string_details("plain", Some(&free), None)
            .await
            .expect("string");
        assert!(d.value == "v1" || d.value == "v2", "{}", d.value);
        assert_eq!(d.variant.as_deref(), Some(d.value.as_str()));
        assert_eq!(d.reason, Some(EvaluationReason::Split));
        assert_eq!(
            d.flag_metadata.values.get("propensity"),
            Some(&FlagMetadataValue::Float(0.5))
        );

        let d = client
            .get_struct_details::<StructValue>("layout", Some(&free), None)
            .await
            .expect("struct");
        let f = &d.value.fields;
        assert_eq!(f.get("columns"), Some(&Value::Int(3)));
        assert_eq!(f.get("dense"), Some(&Value::Bool(true)));
        assert_eq!(f.get("name"), Some(&Value::String("g".into())));
        assert_eq!(f.get("gap"), Some(&Value::Float(0.5)));
        assert_eq!(
            f.get("tags"),
            Some(&Value::Array(vec![
                Value::String("a".into()),
                Value::String("b".into())
            ]))
        );
        assert_eq!(
            f.get("inner")
                .and_then(Value::as_struct)
                .and_then(|s| s.fields.get("x")),
            Some(&Value::Int(1))
        );
        assert!(!f.contains_key("none"), "null fields are left out");

        let d = client
            .get_bool_details("killed", Some(&free), None)
            .await
            .expect("bool");
        assert_eq!(d.reason, Some(EvaluationReason::Disabled));

        // No fields besides the targeting key: the features come from the engine's source.
        let d = client
            .get_bool_details("dark_mode", Some(&ctx("stored-pro")), None)
            .await
            .expect("bool");
        assert!(d.value, "the stored plan is pro");
    });
}

#[test]
fn errors_are_the_specs_codes_and_the_client_falls_back() {
    runtime().block_on(async {
        let client = client("errors", ElvonProvider::new(engine())).await;
        let free = ctx("u").with_custom_field("plan", "free");
        let (c, m) = code(client.get_bool_details("nope", Some(&free), None).await);
        assert_eq!(c, EvaluationErrorCode::FlagNotFound);
        assert!(m.contains("nope"), "{m}");
        let (c, m) = code(
            client
                .get_bool_details("max_items", Some(&free), None)
                .await,
        );
        assert_eq!(c, EvaluationErrorCode::TypeMismatch);
        assert!(m.contains("an integer") && m.contains("max_items"), "{m}");
        let (c, _) = code(client.get_int_details("ratio", Some(&free), None).await);
        assert_eq!(
            c,
            EvaluationErrorCode::TypeMismatch,
            "a float is not an integer"
        );
        let (c, _) = code(client.get_bool_details("plain", Some(&free), None).await);
        assert_eq!(
            c,
            EvaluationErrorCode::TypeMismatch,
            "no payload: the value is a string"
        );
        let (c, _) = code(
            client
                .get_struct_details::<StructValue>("color", Some(&free), None)
                .await,
        );
        assert_eq!(c, EvaluationErrorCode::TypeMismatch);
        let no_key = EvaluationContext::default().with_custom_field("plan", "pro");
        let (c, _) = code(
            client
                .get_bool_details("dark_mode", Some(&no_key), None)
                .await,
        );
        assert_eq!(c, EvaluationErrorCode::TargetingKeyMissing);
        let odd =
            ctx("u").with_custom_field(
                "blob",
                EvaluationContextFieldValue::new_struct(
                    std::collections::HashMap::<String, i64>::new(),
                ),
            );
        let (c, m) = code(client.get_bool_details("dark_mode", Some(&odd), None).await);
        assert_eq!(c, EvaluationErrorCode::InvalidContext);
        assert!(m.contains("blob"), "{m}");
        // A list of strings is a feature.
        let listed = ctx("u").with_custom_field(
            "tags",
            EvaluationContextFieldValue::new_struct(vec!["x".to_owned()]),
        );
        assert!(client
            .get_bool_details("dark_mode", Some(&listed), None)
            .await
            .is_ok());
        // The value API gives the caller's default on an error.
        assert!(client
            .get_bool_value("nope", Some(&free), None)
            .await
            .is_err());
    });
}

#[test]
fn status_metadata_and_track_feed_the_engines_rewards() {
    runtime().block_on(async {
        let bare = ElvonProvider::new(Engine::default());
        assert_eq!(bare.status(), ProviderStatus::NotReady, "no config yet");
        assert_eq!(bare.metadata().name, "elvon");
        let provider = ElvonProvider::new(engine());
        assert_eq!(provider.status(), ProviderStatus::Ready);
        let client = client("track", provider.clone()).await;
        let mut applied = 0;
        for i in 0..20 {
            let c = ctx(&format!("user-{i}")).with_custom_field("plan", "free");
            let d = client
                .get_string_details("hero", Some(&c), None)
                .await
                .expect("bandit");
            assert_eq!(d.reason, Some(EvaluationReason::Split));
            assert!(matches!(
                d.flag_metadata.values.get("modelVersion"),
                Some(FlagMetadataValue::Int(_))
            ));
            let id = meta_str(&d.flag_metadata, "decisionId");
            let out = provider
                .track(
                    "click",
                    &c,
                    &TrackingEventDetails::for_decision(id).value(1.0),
                )
                .expect("tracked");
            applied += usize::from(out == RewardOutcome::Applied);
        }
        assert_eq!(applied, 20);
        assert_eq!(provider.engine().reward_stats().applied, 20);
        // A tracked event for a decision that is not a bandit's is not a reward.
        let free = ctx("u").with_custom_field("plan", "free");
        let d = client
            .get_bool_details("dark_mode", Some(&free), None)
            .await
            .expect("bool");
        let id = meta_str(&d.flag_metadata, "decisionId");
        assert_eq!(
            provider.track("click", &free, &TrackingEventDetails::for_decision(id)),
            Ok(RewardOutcome::Unknown)
        );
        assert_eq!(
            provider.track("click", &free, &TrackingEventDetails::default()),
            Err(TrackError::NoDecisionId)
        );
        assert_eq!(
            provider.track("", &free, &TrackingEventDetails::for_decision("00")),
            Err(TrackError::EmptyEventName)
        );
        assert!(matches!(
            provider.track("click", &free, &TrackingEventDetails::for_decision("xyz")),
            Err(TrackError::BadDecisionId(s)) if s == "xyz"
        ));
    });
}
