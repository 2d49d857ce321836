//! `GET /events`: what happened to the server's containers and images, as Docker streams
//! it (one JSON object a line), with `since`, `until` and the `type`, `container`, `image`
//! and `event` filters.
//!
//! The server keeps the last [`KEPT`] events (so `since` can replay them) and hands every
//! new one to whoever follows; memory stays bounded however long the server runs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Request;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::serve::http::{self, channel_body, query, Answer, ApiError};

/// How many past events the server keeps for `since`.
pub const KEPT: usize = 512;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `container` or `image`.
    pub typ: &'static str,
    /// `create`, `start`, `die`, `destroy`, `kill`, `load`, `tag`, `untag`, `delete`,
    /// `pull`.
    pub action: String,
    /// The container's id, or the image's name.
    pub id: String,
    /// `name`, `image`, `exitCode`, `signal`…
    pub attributes: BTreeMap<String, String>,
    /// Unix time in nanoseconds.
    pub time_nano: u64,
}

impl Event {
    /// The event as Docker writes it (with the pre-1.22 `status`, `id` and `from` that
    /// older clients still read).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "Type": self.typ,
            "Action": self.action,
            "Actor": {"ID": self.id, "Attributes": self.attributes},
            "scope": "local",
            "time": self.time_nano / 1_000_000_000,
            "timeNano": self.time_nano,
            "status": self.action,
            "id": self.id,
        });
        if let Some(image) = self.attributes.get("image") {
            v["from"] = json!(image);
        }
        v
    }
}

/// The event log: the last [`KEPT`] events and the followers of new ones.
pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
    recent: Mutex<VecDeque<Arc<Event>>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(KEPT).0,
            recent: Mutex::new(VecDeque::with_capacity(KEPT)),
        }
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Events {
    /// Records an event now and hands it to every follower.
    pub fn emit(
        &self,
        typ: &'static str,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        let ev = Arc::new(Event {
            typ,
            action: action.to_string(),
            id: id.to_string(),
            attributes,
            time_nano: now_nanos(),
        });
        let mut recent = self.recent.lock().expect("events lock");
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(ev.clone());
        // Nobody following is not an error.
        let _ = self.tx.send(ev);
    }

    /// The kept events and a follower of the ones after them (none lost, none twice).
    pub fn follow(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let recent = self.recent.lock().expect("events lock");
        (recent.iter().cloned().collect(), self.tx.subscribe())
    }

    /// How many events are kept (bounded by [`KEPT`]).
    pub fn kept(&self) -> usize {
        self.recent.lock().expect("events lock").len()
    }
}

/// Which events a request wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Unix nanoseconds; events before are not sent.
    pub since: Option<u64>,
    /// Unix nanoseconds; the stream ends there.
    pub until: Option<u64>,
    /// Filter name → accepted values (any of them matches).
    pub filters: HashMap<String, Vec<String>>,
}

/// The filters `events` understands.
const FILTERS: &[&str] = &["type", "container", "image", "event"];

/// `1700000000`, `1700000000.5` or `1700000000.000000001` → unix nanoseconds.
pub fn parse_time(field: &str, s: &str) -> Result<u64, ApiError> {
    let bad = || ApiError::bad(format!("{field}: `{s}` is not a unix timestamp"));
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    if frac.len() > 9 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let nanos: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    Ok(secs * 1_000_000_000 + nanos)
}

/// Docker's `filters` query parameter: `{"type":["container"]}` or the older
/// `{"type":{"container":true}}`. A filter `events` does not know is refused.
pub fn parse_filters(text: &str) -> Result<HashMap<String, Vec<String>>, ApiError> {
    let mut out = HashMap::new();
    if text.trim().is_empty() {
        return Ok(out);
    }
    let v: Value =
        serde_json::from_str(text).map_err(|e| ApiError::bad(format!("filters: {e}")))?;
    let Value::Object(map) = v else {
        return Err(ApiError::bad("filters: not a JSON object"));
    };
    for (k, vals) in map {
        if !FILTERS.contains(&k.as_str()) {
            return Err(ApiError::bad(format!(
                "filters: `{k}` is not supported (supported: {})",
                FILTERS.join(", ")
            )));
        }
        let list: Vec<String> = match vals {
            Value::Array(a) => a
                .into_iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            Value::Object(o) => o
                .into_iter()
                .filter(|(_, on)| on.as_bool().unwrap_or(false))
                .map(|(k, _)| k)
                .collect(),
            _ => return Err(ApiError::bad(format!("filters: `{k}`: not a list"))),
        };
        out.insert(k, list);
    }
    Ok(out)
}

impl Filter {
    /// The filter a request's query gives.
    pub fn from_query(q: &HashMap<String, String>) -> Result<Filter, ApiError> {
        let time = |k: &str| -> Result<Option<u64>, ApiError> {
            q.get(k)
                .filter(|s| !s.is_empty())
                .map(|s| parse_time(k, s))
                .transpose()
        };
        Ok(Filter {
            since: time("since")?,
            until: time("until")?,
            filters: parse_filters(q.get("filters").map(String::as_str).unwrap_or(""))?,
        })
    }

    /// Whether `ev` passes the filters (not the times).
    pub fn matches(&self, ev: &Event) -> bool {
        let any = |key: &str, pred: &dyn Fn(&str) -> bool| {
            self.filters
                .get(key)
                .is_none_or(|vals| vals.is_empty() || vals.iter().any(|v| pred(v)))
        };
        let name = ev.attributes.get("name").map(String::as_str);
        let image = ev.attributes.get("image").map(String::as_str);
        any("type", &|v| v == ev.typ)
            && any("event", &|v| v == ev.action)
            && any("container", &|v| {
                ev.typ == "container"
                    && (ev.id.starts_with(v)
                        || ev
                            .id
                            .strip_prefix(crate::runner::ID_PREFIX)
                            .is_some_and(|i| !v.is_empty() && i.starts_with(v))
                        || name == Some(v))
            })
            && any("image", &|v| {
                image == Some(v) || (ev.typ == "image" && ev.id == v)
            })
    }

    /// Whether `ev` lies within `since` and `until` and passes the filters.
    pub fn wants(&self, ev: &Event) -> bool {
        self.since.is_none_or(|s| ev.time_nano >= s)
            && self.until.is_none_or(|u| ev.time_nano <= u)
            && self.matches(ev)
    }
}

/// `GET /events?since=&until=&filters=`: the kept events from `since` on, then every new
/// one until `until` (or until the client goes).
pub fn events(events: &Events, req: &Request<Incoming>) -> Answer {
    let filter = Filter::from_query(&query(req))?;
    let (backlog, mut rx) = events.follow();
    let (tx, body) = channel_body();
    let line = |ev: &Event| Bytes::from(format!("{}\n", ev.to_json()));
    tokio::spawn(async move {
        if filter.since.is_some() {
            for ev in backlog.iter().filter(|e| filter.wants(e)) {
                if tx.send(line(ev)).await.is_err() {
                    return;
                }
            }
        }
        let left = |u: u64| Duration::from_nanos(u.saturating_sub(now_nanos()));
        if filter.until.is_some_and(|u| left(u).is_zero()) {
            return;
        }
        let deadline = async {
            match filter.until {
                Some(u) => tokio::time::sleep(left(u)).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                got = rx.recv() => match got {
                    Ok(ev) => {
                        if filter.wants(&ev) && tx.send(line(&ev)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    Ok(http::streamed("application/json", body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(typ: &'static str, action: &str, id: &str, name: &str, t: u64) -> Event {
        let mut attributes = BTreeMap::new();
        attributes.insert("name".to_string(), name.to_string());
        attributes.insert("image".to_string(), "busybox".to_string());
        Event {
            typ,
            action: action.into(),
            id: id.into(),
            attributes,
            time_nano: t,
        }
    }

    #[test]
    fn timestamps_are_seconds_with_an_optional_fraction() {
        assert_eq!(parse_time("since", "2").unwrap(), 2_000_000_000);
        assert_eq!(parse_time("since", "2.5").unwrap(), 2_500_000_000);
        assert_eq!(parse_time("since", "2.000000001").unwrap(), 2_000_000_001);
        for bad in ["x", "1.x", "1.0000000001", "-1"] {
            let e = parse_time("until", bad).unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.starts_with("until: "), "{}", e.message);
        }
    }

    #[test]
    fn filters_take_both_shapes_and_refuse_unknown_names() {
        let a = parse_filters(r#"{"type":["container"],"event":["die"]}"#).unwrap();
        let b = parse_filters(r#"{"type":{"container":true},"event":{"die":true}}"#).unwrap();
        assert_eq!(a, b);
        let e = parse_filters(r#"{"label":["x=y"]}"#).unwrap_err();
        assert_eq!(
            e.message,
            "filters: `label` is not supported (supported: type, container, image, event)"
        );
        assert!(parse_filters("[]").is_err());
    }

    #[test]
    fn filters_select_by_type_container_event_and_time() {
        let f = Filter {
            since: Some(10),
            until: Some(20),
            filters: parse_filters(r#"{"type":["container"],"container":["job"]}"#).unwrap(),
        };
        assert!(f.wants(&ev("container", "start", "stk-1", "job", 15)));
        assert!(!f.wants(&ev("container", "start", "stk-1", "other", 15)));
        assert!(!f.wants(&ev("image", "tag", "busybox", "job", 15)));
        assert!(!f.wants(&ev("container", "start", "stk-1", "job", 9)));
        assert!(!f.wants(&ev("container", "start", "stk-1", "job", 21)));
        let by_id = Filter {
            filters: parse_filters(r#"{"container":["1ab"]}"#).unwrap(),
            ..Filter::default()
        };
        let id = format!("{}1abc", crate::runner::ID_PREFIX);
        assert!(by_id.matches(&ev("container", "die", &id, "x", 0)));
        assert!(!by_id.matches(&ev("container", "die", "stk-2", "x", 0)));
    }

    #[test]
    fn the_log_keeps_a_bounded_tail_and_followers_see_new_events() {
        let log = Events::default();
        for i in 0..(KEPT + 10) {
            log.emit("container", "create", &format!("c{i}"), BTreeMap::new());
        }
        assert_eq!(log.kept(), KEPT);
        let (backlog, mut rx) = log.follow();
        assert_eq!(backlog.first().unwrap().id, "c10");
        log.emit("container", "start", "new", BTreeMap::new());
        assert_eq!(rx.try_recv().unwrap().id, "new");
        let j = backlog[0].to_json();
        assert_eq!(j["Type"], "container");
        assert_eq!(j["Action"], "create");
        assert_eq!(j["Actor"]["ID"], "c10");
        assert_eq!(j["status"], "create");
    }
}
