//! Property tests: every message round-trips through its frame; decoding any
//! byte string (random, truncated or mutated valid frames) returns a value or a
//! typed error and never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omega_protocol::codec::*;
use omega_protocol::limits::*;
use omega_protocol::*;
use proptest::collection::vec;
use proptest::prelude::*;

fn embedding() -> impl Strategy<Value = Embedding> {
    vec(-1.0f32..1.0, EMBEDDING_DIM).prop_filter_map("zero vector", |v| Embedding::new(v).ok())
}

fn bucket() -> impl Strategy<Value = ContextBucket> {
    (0u8..8).prop_map(|i| ContextBucket::from_index(i).unwrap())
}

fn rate() -> impl Strategy<Value = f32> {
    (0u8..=255).prop_map(|b| f32::from(b) / 255.0)
}

fn pattern() -> impl Strategy<Value = PatternSummary> {
    (any::<u64>(), bucket(), embedding(), rate(), any::<u32>()).prop_map(
        |(id, bucket, embedding, success_rate, samples)| PatternSummary {
            id: PatternId(id),
            bucket,
            embedding,
            success_rate,
            samples,
        },
    )
}

fn region() -> impl Strategy<Value = Region> {
    "[a-z0-9_-]{1,32}".prop_map(|s| Region::new(s).unwrap())
}

fn content_id() -> impl Strategy<Value = ContentId> {
    "[A-Za-z0-9._:/-]{1,64}".prop_map(|s| ContentId::new(s).unwrap())
}

fn request() -> impl Strategy<Value = SyncRequest> {
    (
        prop_oneof![
            Just(SyncKind::Delta),
            Just(SyncKind::Snapshot),
            Just(SyncKind::Forget)
        ],
        any::<[u64; 4]>(),
        region(),
        vec(pattern(), 0..6),
        vec(pattern(), 0..6),
        vec(any::<u64>().prop_map(PatternId), 0..20),
    )
        .prop_map(|(kind, v, region, added, updated, removed)| SyncRequest {
            kind,
            base_version: v[0],
            pattern_version: v[1],
            global_version: v[2],
            catalog_version: v[3],
            region,
            delta: PatternDelta {
                added,
                updated,
                removed,
            },
            round: None,
            fleet: Default::default(),
        })
}

fn catalog_entry() -> impl Strategy<Value = CatalogEntry> {
    (
        content_id(),
        "[A-Za-z0-9 ,.'()]{1,60}",
        vec("[A-Za-z-]{1,20}", 0..4),
        proptest::option::of(1870u16..=2100),
        "[A-Za-z0-9 ,.]{0,100}",
        embedding(),
    )
        .prop_filter_map(
            "blank title",
            |(id, title, genres, year, description, embedding)| {
                let item = CatalogItem {
                    id,
                    title,
                    genres,
                    year,
                    description,
                };
                item.validate().ok()?;
                Some(CatalogEntry { item, embedding })
            },
        )
}

fn sync_error() -> impl Strategy<Value = SyncError> {
    prop_oneof![
        any::<u32>().prop_map(|secs| SyncError::RetryAfter { secs }),
        ".{0,300}".prop_map(|reason| SyncError::Unauthorized { reason }),
        ".{0,300}".prop_map(|reason| SyncError::BadRequest { reason }),
        any::<u64>().prop_map(|node_version| SyncError::ResyncRequired { node_version }),
        (any::<u16>(), any::<u16>(), any::<u16>())
            .prop_map(|(got, min, max)| SyncError::UnsupportedVersion { got, min, max }),
        ".{0,300}".prop_map(|reason| SyncError::Internal { reason }),
    ]
}

fn response() -> impl Strategy<Value = SyncResponse> {
    let global = (
        any::<u64>(),
        bucket(),
        embedding(),
        rate(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(id, bucket, embedding, success_rate, support, samples)| GlobalPattern {
                id,
                bucket,
                embedding,
                success_rate,
                support,
                samples,
            },
        );
    let trend =
        (content_id(), bucket(), rate()).prop_map(|(content_id, bucket, score)| TrendSignal {
            content_id,
            bucket,
            score,
        });
    let page = (
        any::<u64>(),
        vec(catalog_entry(), 0..3),
        vec(content_id(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(version, upserts, removed, more)| CatalogPage {
            version,
            upserts,
            removed,
            more,
        });
    let accepted = (
        any::<[u64; 2]>(),
        any::<bool>(),
        vec(global, 0..5),
        vec(any::<u64>(), 0..5),
        vec(trend, 0..5),
        proptest::option::of(page),
        any::<u32>(),
    )
        .prop_map(
            |(v, global_reset, global_patterns, global_removed, trends, catalog, next)| {
                Ok(SyncAccepted {
                    acked_version: v[0],
                    global_version: v[1],
                    global_reset,
                    global_patterns,
                    global_removed,
                    trends,
                    catalog,
                    next_sync_secs: next,
                    round: None,
                    fleet: None,
                })
            },
        );
    prop_oneof![accepted, sync_error().prop_map(Err)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Quantization happens once: decoding then re-encoding gives the same bytes.
    #[test]
    fn requests_round_trip(r in request()) {
        let frame = encode_request(&r).unwrap();
        let (body, rest) = unframe(&frame, MAX_REQUEST_FRAME).unwrap();
        prop_assert!(rest.is_empty());
        let decoded = decode_request(body).unwrap();
        prop_assert_eq!(decoded.kind, r.kind);
        prop_assert_eq!(&decoded.region, &r.region);
        prop_assert_eq!(decoded.pattern_version, r.pattern_version);
        prop_assert_eq!(decoded.delta.removed.len(), r.delta.removed.len());
        for (a, b) in decoded.delta.updated.iter().zip(&r.delta.updated) {
            prop_assert_eq!(a.id, b.id);
            prop_assert_eq!(a.samples, b.samples);
            prop_assert!((a.success_rate - b.success_rate).abs() < 1e-6);
            prop_assert!(a.embedding.cosine(&b.embedding) > 0.8);
        }
        prop_assert_eq!(encode_request(&decoded).unwrap(), frame);
    }

    #[test]
    fn responses_round_trip(r in response()) {
        let frame = encode_response(&r).unwrap();
        let (body, _) = unframe(&frame, MAX_RESPONSE_FRAME).unwrap();
        let decoded = decode_response(body).unwrap();
        match (&decoded, &r) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.global_patterns.len(), b.global_patterns.len());
                prop_assert_eq!(&a.trends.iter().map(|t| &t.content_id).collect::<Vec<_>>(),
                                &b.trends.iter().map(|t| &t.content_id).collect::<Vec<_>>());
                prop_assert_eq!(a.catalog.as_ref().map(|c| c.upserts.len()),
                                b.catalog.as_ref().map(|c| c.upserts.len()));
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.kind(), b.kind()),
            _ => prop_assert!(false, "outcome changed"),
        }
        prop_assert_eq!(encode_response(&decoded).unwrap(), frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..4096)) {
        let _ = unframe(&bytes, MAX_REQUEST_FRAME);
        let _ = decode_request(&bytes);
        let _ = decode_response(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(r in request(), cuts in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let frame = encode_request(&r).unwrap();
        let mut body = frame[FRAME_HEADER..].to_vec();
        for (i, b) in &cuts {
            let i = i.index(body.len());
            body[i] = *b;
        }
        let _ = decode_request(&body);
        let truncated = &frame[..cut.index(frame.len())];
        prop_assert!(unframe(truncated, MAX_REQUEST_FRAME).is_err());
    }

    #[test]
    fn mutated_responses_never_panic(r in response(), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let frame = encode_response(&r).unwrap();
        let mut body = frame[FRAME_HEADER..].to_vec();
        for (i, b) in &flips {
            let i = i.index(body.len());
            body[i] = *b;
        }
        let _ = decode_response(&body);
    }
}

fn valid_request_body() -> Vec<u8> {
    let r = SyncRequest {
        kind: SyncKind::Delta,
        base_version: 1,
        pattern_version: 2,
        global_version: 0,
        catalog_version: 0,
        region: Region::new("eu").unwrap(),
        delta: PatternDelta::default(),
        round: None,
        fleet: Default::default(),
    };
    encode_request(&r).unwrap()[FRAME_HEADER..].to_vec()
}

#[test]
fn unknown_version_is_a_typed_error() {
    let mut body = valid_request_body();
    body[0] = 9; // version varint
    assert!(matches!(
        decode_request(&body),
        Err(CodecError::UnsupportedVersion(9))
    ));
    assert!(matches!(
        decode_response(&body),
        Err(CodecError::UnsupportedVersion(9))
    ));
}

#[test]
fn oversized_frames_are_refused_before_reading() {
    let mut frame = ((MAX_REQUEST_FRAME + 1) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&[0; 16]);
    assert!(matches!(
        unframe(&frame, MAX_REQUEST_FRAME),
        Err(CodecError::FrameTooLarge { .. })
    ));
    let big = vec![0u8; MAX_REQUEST_FRAME + 1];
    assert!(matches!(
        decode_request(&big),
        Err(CodecError::FrameTooLarge { .. })
    ));
}

#[test]
fn trailing_bytes_and_truncation_are_typed_errors() {
    let mut body = valid_request_body();
    body.push(0);
    assert!(matches!(
        decode_request(&body),
        Err(CodecError::TrailingBytes(1))
    ));
    let body = valid_request_body();
    assert!(matches!(
        decode_request(&body[..body.len() - 1]),
        Err(CodecError::Malformed(_))
    ));
}

#[test]
fn invalid_fields_are_rejected_on_decode() {
    // Bucket index 9 in an otherwise valid pattern.
    let mut r = omega_protocol::wire::WireRequest::try_from_domain(&SyncRequest {
        kind: SyncKind::Delta,
        base_version: 0,
        pattern_version: 1,
        global_version: 0,
        catalog_version: 0,
        region: Region::new("eu").unwrap(),
        delta: PatternDelta {
            added: vec![PatternSummary {
                id: PatternId(1),
                bucket: ContextBucket::from_index(0).unwrap(),
                embedding: Embedding::new(vec![1.0; EMBEDDING_DIM]).unwrap(),
                success_rate: 1.0,
                samples: 3,
            }],
            ..Default::default()
        },
        round: None,
        fleet: Default::default(),
    })
    .unwrap();
    r.added.0[0].bucket = 9;
    let body = postcard::to_stdvec(&r).unwrap();
    assert!(matches!(decode_request(&body), Err(CodecError::Invalid(_))));
    r.added.0[0].bucket = 0;
    r.region = "Not A Region".into();
    let body = postcard::to_stdvec(&r).unwrap();
    assert!(matches!(decode_request(&body), Err(CodecError::Invalid(_))));
}

#[test]
fn too_many_patterns_are_refused_when_encoding() {
    let p = PatternSummary {
        id: PatternId(1),
        bucket: ContextBucket::from_index(0).unwrap(),
        embedding: Embedding::new(vec![1.0; EMBEDDING_DIM]).unwrap(),
        success_rate: 1.0,
        samples: 3,
    };
    let r = SyncRequest {
        kind: SyncKind::Snapshot,
        base_version: 0,
        pattern_version: 1,
        global_version: 0,
        catalog_version: 0,
        region: Region::new("eu").unwrap(),
        delta: PatternDelta {
            added: vec![p; MAX_DELTA_PATTERNS + 1],
            ..Default::default()
        },
        round: None,
        fleet: Default::default(),
    };
    assert!(matches!(
        encode_request(&r),
        Err(CodecError::Invalid(DomainError::TooMany { .. }))
    ));
}

#[test]
fn the_encoder_refuses_a_catalog_item_the_decoder_would_refuse() {
    let page = |genres: usize| -> SyncResponse {
        let item = CatalogItem {
            id: ContentId::new("m-1").unwrap(),
            title: "A title".into(),
            genres: (0..genres).map(|g| format!("g{g}")).collect(),
            year: Some(2001),
            description: String::new(),
        };
        let mut v = vec![0.0f32; EMBEDDING_DIM];
        v[0] = 1.0;
        Ok(SyncAccepted {
            acked_version: 0,
            global_version: 0,
            global_reset: false,
            global_patterns: vec![],
            global_removed: vec![],
            trends: vec![],
            catalog: Some(CatalogPage {
                version: 1,
                upserts: vec![CatalogEntry {
                    item,
                    embedding: Embedding::new(v).unwrap(),
                }],
                removed: vec![],
                more: false,
            }),
            next_sync_secs: 600,
            round: None,
            fleet: None,
        })
    };
    let ok = encode_response(&page(MAX_GENRES)).unwrap();
    assert!(decode_response(&ok[FRAME_HEADER..]).is_ok());
    // One genre too many: refused when encoding, not by every TV decoding it.
    assert!(encode_response(&page(MAX_GENRES + 1)).is_err());
}

fn fleet_page(total: f32, offset: u32, total_titles: u32) -> FleetPage {
    FleetPage {
        version: 3,
        offset,
        total_titles,
        titles: vec![FleetTitle {
            id: ContentId::new("ml100k:50").unwrap(),
            total,
            partners: vec![(ContentId::new("ml100k:181").unwrap(), 12.5)],
        }],
    }
}

fn accepted_with(fleet: FleetPage, round: Option<NodeToTv>) -> SyncResponse {
    Ok(SyncAccepted {
        fleet: Some(fleet),
        round,
        ..Default::default()
    })
}

#[test]
fn round_messages_and_fleet_pages_round_trip_and_bad_ones_are_refused() {
    use omega_privacy::round::RoundSpec;
    use omega_privacy::secagg::{ClientId, Config, MaskedInput, ToServer};
    use omega_privacy::ContributionLayout;

    // A masked input travels unchanged, and so does an invitation.
    let masked = TvToNode {
        session: 7,
        msg: ToServer::MaskedInput(MaskedInput {
            masked: (0..5000u32)
                .map(|v| v.wrapping_mul(2_654_435_761))
                .collect(),
        }),
    };
    let mut req = omega_protocol::SyncRequest::<Embedding> {
        kind: SyncKind::Delta,
        base_version: 0,
        pattern_version: 0,
        global_version: 0,
        catalog_version: 4,
        region: Region::new("eu-west").unwrap(),
        delta: PatternDelta::default(),
        round: Some(masked),
        fleet: FleetCursor {
            version: 3,
            offset: 200,
        },
    };
    let frame = encode_request(&req).unwrap();
    assert_eq!(decode_request(&frame[4..]).unwrap(), req);
    let layout = ContributionLayout::new(10, 3, 2).unwrap();
    let invite = NodeToTv::Invite {
        spec: RoundSpec {
            session: Config {
                session: 7,
                cohort: 20,
                threshold: 11,
                dim: layout.dimension() as u32,
            },
            layout,
            pair_slots: vec![0, 4, 9],
            catalog_version: 4,
            scale: 3,
        },
        member: ClientId(2),
    };
    let answer = accepted_with(fleet_page(40.0, 0, 1), Some(invite));
    let frame = encode_response(&answer).unwrap();
    assert_eq!(decode_response(&frame[4..]).unwrap(), answer);

    // A layout of no titles (the node is not trusted) does not decode.
    let layout_bytes = postcard::to_stdvec(&layout).unwrap();
    let zero_items = postcard::to_stdvec(&(0u32, 3u16, 2u8)).unwrap();
    assert!(postcard::from_bytes::<ContributionLayout>(&layout_bytes).is_ok());
    assert!(postcard::from_bytes::<ContributionLayout>(&zero_items).is_err());

    // Fleet totals must be finite and positive; a page must fit its version.
    for total in [f32::NAN, f32::INFINITY, 0.0, -1.0] {
        assert!(
            matches!(
                encode_response(&accepted_with(fleet_page(total, 0, 1), None)),
                Err(CodecError::Invalid(DomainError::OutOfRange { .. }))
            ),
            "{total} encoded"
        );
        let mut wire = omega_protocol::wire::WireResponse::try_from_domain(&accepted_with(
            fleet_page(1.0, 0, 1),
            None,
        ))
        .unwrap();
        if let omega_protocol::wire::WireOutcome::Accepted(a) = &mut wire.outcome {
            a.fleet.as_mut().unwrap().titles.0[0].total = total;
        }
        let body = postcard::to_stdvec(&wire).unwrap();
        assert!(
            matches!(decode_response(&body), Err(CodecError::Invalid(_))),
            "{total} decoded"
        );
    }
    let past_the_end = encode_response(&accepted_with(fleet_page(1.0, 5, 5), None)).unwrap();
    assert!(matches!(
        decode_response(&past_the_end[4..]),
        Err(CodecError::Invalid(DomainError::OutOfRange { .. }))
    ));
    // More partners than a page may carry are refused before allocating.
    let mut page = fleet_page(1.0, 0, 1);
    page.titles[0].partners =
        vec![(ContentId::new("ml100k:1").unwrap(), 1.0); MAX_FLEET_PARTNERS + 1];
    assert!(matches!(
        encode_response(&accepted_with(page, None)),
        Err(CodecError::Invalid(DomainError::TooMany { .. }))
    ));
    req.round = None;
    assert!(encode_request(&req).is_ok());
}
