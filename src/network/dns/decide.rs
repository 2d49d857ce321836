//! What the forwarder answers, decided without sockets: a query and (for a forwarded one)
//! the upstream's answer in, the reply and the addresses to admit out. Pure.
//!
//! - A query that is not one standard question of class IN, or whose name no host-name
//!   entry matches: `REFUSED`, nothing asked upstream.
//! - An allowlisted name, type A: asked upstream (see [`on_answer`]).
//! - An allowlisted name, any other type (AAAA included): an empty `NOERROR` answer, so
//!   that resolvers fall back to IPv4 at once.
//! - The upstream's answer to an A question: if any address in it lies in a denied range
//!   ([`crate::network::ALWAYS_DENIED`]) that no range entry inside it names explicitly,
//!   `REFUSED` and nothing admitted (DNS rebinding); otherwise its CNAME and A records
//!   are passed on and every A address is admitted to every entry matching the name, for
//!   its TTL (at least [`MIN_TTL`], at most [`MAX_TTL`] seconds).

use std::net::Ipv4Addr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};

use crate::network::allow::{AllowEntry, Dest};
use crate::network::ALWAYS_DENIED;

/// The shortest admission, in seconds, whatever the record's TTL (0 included).
pub const MIN_TTL: u32 = 1;
/// The longest admission, in seconds, whatever the record's TTL.
pub const MAX_TTL: u32 = 3600;

/// One address to admit: the entry's index, the address, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Admission {
    /// Index of the entry in the sandbox's entries.
    pub entry: usize,
    /// The resolved address.
    pub addr: Ipv4Addr,
    /// Seconds to admit it for.
    pub ttl: u32,
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Answer at once with this message.
    Reply(Message),
    /// Ask the upstream; the parsed query and the indexes of the entries that match.
    Forward {
        /// The query as received.
        query: Message,
        /// Entries whose name matches the question.
        entries: Vec<usize>,
    },
}

fn reply_to(query: &Message, code: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code);
    for q in query.queries() {
        m.add_query(q.clone());
    }
    m
}

/// Decides what to do with `query` (wire format) for a sandbox with `entries`. `None`:
/// not even a DNS header, dropped without an answer.
pub fn on_query(entries: &[AllowEntry], query: &[u8]) -> Option<Step> {
    let q = match Message::from_vec(query) {
        Ok(q) => q,
        Err(_) => {
            // Echo the ID when there is one, so the client stops waiting.
            if query.len() < 12 {
                return None;
            }
            let mut m = Message::new();
            m.set_id(u16::from_be_bytes([query[0], query[1]]))
                .set_message_type(MessageType::Response)
                .set_response_code(ResponseCode::FormErr);
            return Some(Step::Reply(m));
        }
    };
    if q.message_type() != MessageType::Query {
        return None;
    }
    if q.op_code() != OpCode::Query || q.queries().len() != 1 {
        return Some(Step::Reply(reply_to(&q, ResponseCode::Refused)));
    }
    let question = &q.queries()[0];
    let name = question.name().to_ascii();
    let matching: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.matches_name(&name))
        .map(|(i, _)| i)
        .collect();
    if matching.is_empty() || question.query_class() != DNSClass::IN {
        return Some(Step::Reply(reply_to(&q, ResponseCode::Refused)));
    }
    if question.query_type() != RecordType::A {
        return Some(Step::Reply(reply_to(&q, ResponseCode::NoError)));
    }
    Some(Step::Forward {
        query: q,
        entries: matching,
    })
}

/// Whether `addr` may be admitted: outside every denied range, or inside a range entry
/// that lies inside a denied range (named explicitly).
pub fn admissible(entries: &[AllowEntry], addr: Ipv4Addr) -> bool {
    let denied = ALWAYS_DENIED.iter().find(|(d, _)| d.contains(addr));
    let Some((d, _)) = denied else {
        return true;
    };
    entries.iter().any(|e| match e.dest {
        Dest::Range(c) => c.contains(addr) && d.prefix <= c.prefix,
        Dest::Host(_) => false,
    })
}

/// The reply to the forwarded `query` given the upstream's `answer` (wire format), and the
/// addresses to admit to the entries `matching` (from [`Step::Forward`]).
pub fn on_answer(
    entries: &[AllowEntry],
    query: &Message,
    matching: &[usize],
    answer: &[u8],
) -> (Message, Vec<Admission>) {
    let Ok(a) = Message::from_vec(answer) else {
        return (reply_to(query, ResponseCode::ServFail), Vec::new());
    };
    if a.id() != query.id()
        || a.message_type() != MessageType::Response
        || a.queries() != query.queries()
    {
        return (reply_to(query, ResponseCode::ServFail), Vec::new());
    }
    if a.response_code() != ResponseCode::NoError {
        return (reply_to(query, a.response_code()), Vec::new());
    }
    let mut reply = reply_to(query, ResponseCode::NoError);
    let mut admit = Vec::new();
    for r in a.answers() {
        match r.data() {
            RData::A(ip) => {
                if !admissible(entries, ip.0) {
                    return (reply_to(query, ResponseCode::Refused), Vec::new());
                }
                let ttl = r.ttl().clamp(MIN_TTL, MAX_TTL);
                for &entry in matching {
                    admit.push(Admission {
                        entry,
                        addr: ip.0,
                        ttl,
                    });
                }
                reply.add_answer(r.clone());
            }
            RData::CNAME(_) => {
                reply.add_answer(r.clone());
            }
            _ => {}
        }
    }
    admit.sort();
    admit.dedup();
    (reply, admit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{Name, Record};

    fn entries(list: &[&str]) -> Vec<AllowEntry> {
        list.iter().map(|e| e.parse().unwrap()).collect()
    }

    fn query(name: &str, t: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(4242).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m
    }

    fn answer(q: &Message, code: ResponseCode, records: Vec<Record>) -> Vec<u8> {
        let mut m = reply_to(q, code);
        for r in records {
            m.add_answer(r);
        }
        m.to_vec().unwrap()
    }

    fn a(name: &str, addr: &str, ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::A(A(addr.parse().unwrap())),
        )
    }

    fn step(list: &[&str], q: &Message) -> Step {
        on_query(&entries(list), &q.to_vec().unwrap()).expect("a step")
    }

    #[test]
    fn only_allowlisted_names_are_forwarded_and_only_for_a() {
        let list = ["api.test:443", "*.cdn.test", "198.18.0.0/24"];
        let cases = [
            ("api.test.", RecordType::A, Ok(vec![0])),
            ("API.TEST.", RecordType::A, Ok(vec![0])),
            ("x.cdn.test.", RecordType::A, Ok(vec![1])),
            ("cdn.test.", RecordType::A, Err(ResponseCode::Refused)),
            ("other.test.", RecordType::A, Err(ResponseCode::Refused)),
            ("api.test.", RecordType::AAAA, Err(ResponseCode::NoError)),
            ("api.test.", RecordType::TXT, Err(ResponseCode::NoError)),
            ("other.test.", RecordType::AAAA, Err(ResponseCode::Refused)),
        ];
        for (name, t, want) in cases {
            let q = query(name, t);
            match (step(&list, &q), want) {
                (Step::Forward { entries, .. }, Ok(w)) => assert_eq!(entries, w, "{name} {t}"),
                (Step::Reply(m), Err(code)) => {
                    assert_eq!(m.response_code(), code, "{name} {t}");
                    assert_eq!(m.id(), 4242);
                    assert!(m.answers().is_empty(), "{name} {t}");
                    assert_eq!(m.queries(), q.queries());
                }
                (got, _) => panic!("{name} {t}: {got:?}"),
            }
        }
    }

    #[test]
    fn malformed_and_multi_question_queries_get_no_forwarding() {
        assert_eq!(on_query(&entries(&["api.test"]), b"short"), None);
        let garbage = [0x12, 0x34, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 1];
        match on_query(&entries(&["api.test"]), &garbage) {
            Some(Step::Reply(m)) => {
                assert_eq!(m.id(), 0x1234);
                assert_eq!(m.response_code(), ResponseCode::FormErr);
            }
            other => panic!("{other:?}"),
        }
        let mut two = query("api.test.", RecordType::A);
        two.add_query(Query::query(
            Name::from_ascii("api.test.").unwrap(),
            RecordType::A,
        ));
        match step(&["api.test"], &two) {
            Step::Reply(m) => assert_eq!(m.response_code(), ResponseCode::Refused),
            other @ Step::Forward { .. } => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_admit_their_a_records_for_their_ttl_to_every_matching_entry() {
        let list = entries(&["api.test:443", "*.test:8080"]);
        let q = query("api.test.", RecordType::A);
        let up = answer(
            &q,
            ResponseCode::NoError,
            vec![
                Record::from_rdata(
                    Name::from_ascii("api.test.").unwrap(),
                    30,
                    RData::CNAME(CNAME(Name::from_ascii("edge.cdn.example.").unwrap())),
                ),
                a("edge.cdn.example.", "198.18.0.2", 0),
                a("edge.cdn.example.", "198.18.0.3", 99_999),
                Record::from_rdata(
                    Name::from_ascii("edge.cdn.example.").unwrap(),
                    30,
                    RData::AAAA(AAAA("2001:db8::1".parse().unwrap())),
                ),
            ],
        );
        let (reply, admit) = on_answer(&list, &q, &[0, 1], &up);
        assert_eq!(reply.response_code(), ResponseCode::NoError);
        assert_eq!(reply.id(), 4242);
        assert_eq!(reply.answers().len(), 3, "the CNAME and both A, no AAAA");
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            admit,
            vec![
                Admission {
                    entry: 0,
                    addr: ip("198.18.0.2"),
                    ttl: MIN_TTL
                },
                Admission {
                    entry: 0,
                    addr: ip("198.18.0.3"),
                    ttl: MAX_TTL
                },
                Admission {
                    entry: 1,
                    addr: ip("198.18.0.2"),
                    ttl: MIN_TTL
                },
                Admission {
                    entry: 1,
                    addr: ip("198.18.0.3"),
                    ttl: MAX_TTL
                },
            ]
        );
    }

    #[test]
    fn an_answer_pointing_into_a_denied_range_is_refused_and_admits_nothing() {
        let q = query("api.test.", RecordType::A);
        for bad in [
            "169.254.169.254",
            "10.0.0.1",
            "127.0.0.1",
            "192.168.1.1",
            "0.0.0.0",
        ] {
            let up = answer(
                &q,
                ResponseCode::NoError,
                vec![a("api.test.", "198.18.0.2", 60), a("api.test.", bad, 60)],
            );
            let (reply, admit) = on_answer(&entries(&["api.test"]), &q, &[0], &up);
            assert_eq!(reply.response_code(), ResponseCode::Refused, "{bad}");
            assert!(reply.answers().is_empty(), "{bad}");
            assert!(admit.is_empty(), "{bad}");
        }
        // Named explicitly by a range inside the denied one: admitted.
        let up = answer(
            &q,
            ResponseCode::NoError,
            vec![a("api.test.", "10.1.2.3", 60)],
        );
        let (reply, admit) = on_answer(&entries(&["api.test", "10.1.2.0/24"]), &q, &[0], &up);
        assert_eq!(reply.response_code(), ResponseCode::NoError);
        assert_eq!(admit.len(), 1);
        // A range wider than the denied one does not name it.
        let (reply, _) = on_answer(&entries(&["api.test", "0.0.0.0/0"]), &q, &[0], &up);
        assert_eq!(reply.response_code(), ResponseCode::Refused);
    }

    #[test]
    fn upstream_errors_and_mismatched_answers_admit_nothing() {
        let list = entries(&["api.test"]);
        let q = query("api.test.", RecordType::A);
        let nx = answer(&q, ResponseCode::NXDomain, vec![]);
        let (reply, admit) = on_answer(&list, &q, &[0], &nx);
        assert_eq!(reply.response_code(), ResponseCode::NXDomain);
        assert!(admit.is_empty());
        // An answer to another question (a spoofed or stale one).
        let other = query("evil.test.", RecordType::A);
        let up = answer(
            &other,
            ResponseCode::NoError,
            vec![a("evil.test.", "198.18.0.9", 60)],
        );
        let (reply, admit) = on_answer(&list, &q, &[0], &up);
        assert_eq!(reply.response_code(), ResponseCode::ServFail);
        assert!(admit.is_empty());
        let (reply, admit) = on_answer(&list, &q, &[0], b"garbage");
        assert_eq!(reply.response_code(), ResponseCode::ServFail);
        assert!(admit.is_empty());
    }
}
