//! Every kind of bad request gets the right status code and a message a
//! user can act on; nothing is stored and the server keeps serving.

use crate::common::*;
use huashen_protos::v1;
use prost::Message;

fn assert_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, want: tonic::Code, needle: &str) {
    let (code, msg) = code_of(r);
    assert_eq!(code, want, "message: {msg}");
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "{msg:?} should mention {needle:?}"
    );
}

fn nothing_stored(server: &TestServer) {
    let d = server.dir.path();
    assert!(
        std::fs::read_dir(d.join("blobs/avatars"))
            .unwrap()
            .next()
            .is_none(),
        "no avatar files"
    );
    assert!(
        std::fs::read_dir(d.join("tmp")).unwrap().next().is_none(),
        "no temp files"
    );
}

#[tokio::test]
async fn enrollment_rejections() {
    let server = TestServer::start_with(|c| c.limits.max_image_bytes = 100_000).await;
    let mut c = server.dev().await;
    let img = portrait(); // ~790 kB, over this server's limit
    let small = small_png(); // a real PNG under the limit
    // PNG magic, then garbage.
    let mut garbage = img[..8].to_vec();
    garbage.extend(std::iter::repeat_n(0x5a, 4000));
    let chunks = |b: &[u8]| b.chunks(16 * 1024).map(|c| c.to_vec()).collect::<Vec<_>>();

    let mut no_consent = enroll_start("x", 0);
    no_consent.consent = None;
    assert_code(
        c.enroll_raw(no_consent, chunks(&small)).await,
        tonic::Code::FailedPrecondition,
        "consent",
    );
    let mut refused = enroll_start("x", 0);
    refused.consent.as_mut().unwrap().subject_consented = false;
    assert_code(
        c.enroll_raw(refused, chunks(&small)).await,
        tonic::Code::FailedPrecondition,
        "subject_consented",
    );
    let mut minor = enroll_start("x", 0);
    minor.consent.as_mut().unwrap().subject_is_minor = true;
    assert_code(
        c.enroll_raw(minor, chunks(&small)).await,
        tonic::Code::FailedPrecondition,
        "guardian",
    );
    let mut no_purpose = enroll_start("x", 0);
    no_purpose.consent.as_mut().unwrap().purpose = " ".into();
    assert_code(
        c.enroll_raw(no_purpose, chunks(&small)).await,
        tonic::Code::FailedPrecondition,
        "purpose",
    );

    let mut no_name = enroll_start("", 0);
    no_name.display_name.clear();
    assert_code(
        c.enroll_raw(no_name, chunks(&small)).await,
        tonic::Code::InvalidArgument,
        "display_name",
    );
    let mut bad_enum = enroll_start("x", 0);
    bad_enum.image_format = 9;
    assert_code(
        c.enroll_raw(bad_enum, chunks(&small)).await,
        tonic::Code::InvalidArgument,
        "image_format",
    );
    let mut unspecified = enroll_start("x", 0);
    unspecified.image_format = 0;
    assert_code(
        c.enroll_raw(unspecified, chunks(&small)).await,
        tonic::Code::InvalidArgument,
        "image_format",
    );
    let mut jpeg = enroll_start("x", 0);
    jpeg.image_format = v1::ImageFormat::Jpeg as i32;
    assert_code(
        c.enroll_raw(jpeg, chunks(&small)).await,
        tonic::Code::InvalidArgument,
        "not a JPEG",
    );
    assert_code(
        c.enroll_raw(enroll_start("x", 0), vec![]).await,
        tonic::Code::InvalidArgument,
        "no image bytes",
    );
    assert_code(
        c.enroll_raw(enroll_start("x", 0), chunks(&garbage)).await,
        tonic::Code::InvalidArgument,
        "decoded",
    );
    assert_code(
        c.enroll_raw(enroll_start("x", 10), chunks(&small)).await,
        tonic::Code::InvalidArgument,
        "total_bytes",
    );

    // Oversize: declared up front, or discovered while streaming.
    assert_code(
        c.enroll_raw(enroll_start("x", img.len() as u64), chunks(&img))
            .await,
        tonic::Code::ResourceExhausted,
        "100000",
    );
    assert_code(
        c.enroll_raw(enroll_start("x", 0), chunks(&img)).await,
        tonic::Code::ResourceExhausted,
        "limit",
    );

    // Message order.
    let empty: Vec<v1::EnrollAvatarRequest> = vec![];
    assert_code(
        c.avatars
            .enroll_avatar(tokio_stream::iter(empty))
            .await
            .map(|_| ()),
        tonic::Code::InvalidArgument,
        "first message",
    );
    let chunk_first = vec![v1::EnrollAvatarRequest {
        payload: Some(v1::enroll_avatar_request::Payload::Chunk(small.clone())),
    }];
    assert_code(
        c.avatars
            .enroll_avatar(tokio_stream::iter(chunk_first))
            .await
            .map(|_| ()),
        tonic::Code::InvalidArgument,
        "start",
    );
    let mut inline = enroll_start("x", 0);
    inline.inline_image = small.clone();
    assert_code(
        c.enroll_raw(inline, chunks(&small)).await,
        tonic::Code::InvalidArgument,
        "inline_image",
    );

    nothing_stored(&server);
    assert!(
        c.avatars
            .list_avatars(v1::ListAvatarsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .avatars
            .is_empty()
    );
    // Photos that decode but cannot make an avatar, and a decompression
    // bomb (a JPEG header claiming 60000×60000 pixels).
    assert_code(
        c.enroll_raw(enroll_start("x", 0), chunks(&small)).await,
        tonic::Code::InvalidArgument,
        "too small",
    );
    assert_code(
        c.enroll_raw(enroll_start("x", 0), chunks(&no_face_png()))
            .await,
        tonic::Code::InvalidArgument,
        "no face",
    );
    let mut bomb = jpeg_portrait();
    let sof = bomb
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("baseline JPEG");
    bomb[sof + 5..sof + 9].copy_from_slice(&[0xea, 0x60, 0xea, 0x60]);
    let mut jpeg_start = enroll_start("x", 0);
    jpeg_start.image_format = v1::ImageFormat::Jpeg as i32;
    assert_code(
        c.enroll_raw(jpeg_start.clone(), chunks(&bomb)).await,
        tonic::Code::ResourceExhausted,
        "pixels",
    );
    // Still serving.
    let fine = jpeg_portrait();
    assert!(fine.len() < 100_000, "{} bytes", fine.len());
    let ok = c.enroll_raw(jpeg_start, chunks(&fine)).await.unwrap();
    assert!(matches!(
        ok.last().unwrap().event,
        Some(v1::enroll_avatar_response::Event::Avatar(_))
    ));
    server.stop().await;
}

#[tokio::test]
async fn ids_paging_and_session_options() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    assert_code(
        c.avatars
            .get_avatar(v1::GetAvatarRequest {
                avatar_id: String::new(),
            })
            .await,
        tonic::Code::InvalidArgument,
        "required",
    );
    assert_code(
        c.avatars
            .get_avatar(v1::GetAvatarRequest {
                avatar_id: "42".into(),
            })
            .await,
        tonic::Code::InvalidArgument,
        "av_",
    );
    assert_code(
        c.avatars
            .get_avatar(v1::GetAvatarRequest {
                avatar_id: "se_0123456789abcdef0123456789abcdef".into(),
            })
            .await,
        tonic::Code::InvalidArgument,
        "av_",
    );
    assert_code(
        c.avatars
            .get_avatar(v1::GetAvatarRequest {
                avatar_id: "av_0123456789abcdef0123456789abcdef".into(),
            })
            .await,
        tonic::Code::NotFound,
        "not found",
    );
    assert_code(
        c.sessions
            .get_session(v1::GetSessionRequest {
                session_id: "se_0123456789abcdef0123456789abcdef".into(),
            })
            .await,
        tonic::Code::NotFound,
        "not found",
    );
    let page = |size: u32, token: &str| v1::ListAvatarsRequest {
        page: Some(v1::PageRequest {
            page_size: size,
            page_token: token.into(),
        }),
    };
    assert_code(
        c.avatars.list_avatars(page(501, "")).await,
        tonic::Code::InvalidArgument,
        "page_size",
    );
    assert_code(
        c.avatars.list_avatars(page(10, "garbage!")).await,
        tonic::Code::InvalidArgument,
        "page_token",
    );

    let avatar = c.enroll("Host").await;
    let create = |f: &dyn Fn(&mut v1::CreateSessionRequest)| {
        let mut r = v1::CreateSessionRequest {
            avatar_id: avatar.avatar_id.clone(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let cases: Vec<(v1::CreateSessionRequest, &str)> = vec![
        (
            create(&|r| {
                r.voice = Some(v1::VoiceOptions {
                    language: "fr-FR".into(),
                    ..Default::default()
                })
            }),
            "language",
        ),
        (
            create(&|r| {
                r.voice = Some(v1::VoiceOptions {
                    voice_id: "a b".into(),
                    ..Default::default()
                })
            }),
            "voice_id",
        ),
        (
            create(&|r| {
                r.voice = Some(v1::VoiceOptions {
                    speed: 5.0,
                    ..Default::default()
                })
            }),
            "speed",
        ),
        (
            create(&|r| {
                r.voice = Some(v1::VoiceOptions {
                    speed: f32::NAN,
                    ..Default::default()
                })
            }),
            "speed",
        ),
        (
            create(&|r| {
                r.output = Some(v1::OutputOptions {
                    width: 641,
                    ..Default::default()
                })
            }),
            "even",
        ),
        (
            create(&|r| {
                r.output = Some(v1::OutputOptions {
                    height: 4000,
                    ..Default::default()
                })
            }),
            "output.height",
        ),
        (
            create(&|r| {
                r.output = Some(v1::OutputOptions {
                    fps: 100,
                    ..Default::default()
                })
            }),
            "output.fps",
        ),
        (
            create(&|r| r.idle_timeout_seconds = 10_000_000),
            "idle_timeout_seconds",
        ),
        (
            create(&|r| r.labels = (0..20).map(|i| (format!("k{i}"), String::new())).collect()),
            "labels",
        ),
        (create(&|r| r.avatar_id = String::new()), "avatar_id"),
    ];
    for (req, needle) in cases {
        assert_code(
            c.sessions.create_session(req).await,
            tonic::Code::InvalidArgument,
            needle,
        );
    }
    assert!(
        c.sessions
            .list_sessions(v1::ListSessionsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .sessions
            .is_empty()
    );
    server.stop().await;
}

#[tokio::test]
async fn streams_with_bad_content() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let long = vec![v1::SpeakRequest {
        session_id: s.session_id.clone(),
        text: "a".repeat(5000),
        flush: false,
    }];
    assert_code(
        c.sessions.speak(tokio_stream::iter(long)).await,
        tonic::Code::InvalidArgument,
        "4096",
    );
    let no_session = vec![v1::SpeakRequest {
        session_id: String::new(),
        text: "hi".into(),
        flush: false,
    }];
    assert_code(
        c.sessions.speak(tokio_stream::iter(no_session)).await,
        tonic::Code::InvalidArgument,
        "session_id",
    );
    let empty: Vec<v1::SpeakRequest> = vec![];
    assert_code(
        c.sessions.speak(tokio_stream::iter(empty)).await,
        tonic::Code::InvalidArgument,
        "empty",
    );

    let audio = |enc: i32, rate: u32, ch: u32| {
        vec![v1::PushAudioRequest {
            payload: Some(v1::push_audio_request::Payload::Start(v1::PushAudioStart {
                session_id: s.session_id.clone(),
                format: Some(v1::AudioFormat {
                    encoding: enc,
                    sample_rate_hz: rate,
                    channels: ch,
                }),
            })),
        }]
    };
    let pcm = v1::AudioEncoding::PcmS16le as i32;
    assert_code(
        c.sessions
            .push_audio(tokio_stream::iter(audio(0, 16000, 1)))
            .await,
        tonic::Code::InvalidArgument,
        "encoding",
    );
    assert_code(
        c.sessions
            .push_audio(tokio_stream::iter(audio(pcm, 44100, 1)))
            .await,
        tonic::Code::InvalidArgument,
        "sample_rate_hz",
    );
    assert_code(
        c.sessions
            .push_audio(tokio_stream::iter(audio(pcm, 16000, 6)))
            .await,
        tonic::Code::InvalidArgument,
        "channels",
    );
    let data_first = vec![v1::PushAudioRequest {
        payload: Some(v1::push_audio_request::Payload::Data(vec![0; 320])),
    }];
    assert_code(
        c.sessions.push_audio(tokio_stream::iter(data_first)).await,
        tonic::Code::InvalidArgument,
        "start",
    );
    // Data that is not what `start` declared, or too much of it at once.
    let with_data = |enc: i32, data: Vec<u8>| {
        let mut m = audio(enc, 48000, 1);
        m.push(v1::PushAudioRequest {
            payload: Some(v1::push_audio_request::Payload::Data(data)),
        });
        m
    };
    let opus = v1::AudioEncoding::Opus as i32;
    assert_code(
        c.sessions
            .push_audio(tokio_stream::iter(with_data(opus, vec![0xff; 40])))
            .await,
        tonic::Code::InvalidArgument,
        "opus",
    );
    assert_code(
        c.sessions
            .push_audio(tokio_stream::iter(with_data(pcm, vec![0; 64 * 1024 + 2])))
            .await,
        tonic::Code::InvalidArgument,
        "at most 65536",
    );
    // A valid start with no audio is an empty, successful push.
    let r = c
        .sessions
        .push_audio(tokio_stream::iter(audio(pcm, 16000, 1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.accepted_ms, 0);

    // Oversize enrollment message: over the server's image limit.
    c.avatars = c.avatars.clone().max_encoding_message_size(64 << 20);
    let mut huge = enroll_start("x", 0);
    huge.inline_image = vec![0x89; 20 * 1024 * 1024 + 1];
    let (code, msg) = code_of(c.enroll_raw(huge, vec![]).await);
    assert!(
        matches!(
            code,
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{code:?} {msg}"
    );
    server.stop().await;
}

/// GetAvatarRequest with `avatar_id` as raw bytes, to send invalid UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawGetAvatar {
    #[prost(bytes = "vec", tag = "1")]
    avatar_id: Vec<u8>,
}

#[tokio::test]
async fn invalid_utf8_and_garbage_bytes_are_invalid_argument() {
    let server = TestServer::start().await;
    let ch = server.channel().await;
    for body in [
        RawGetAvatar {
            avatar_id: vec![0xff, 0xfe, b'a'],
        }
        .encode_to_vec(),
        // Not protobuf at all: a length-delimited field that runs past the end.
        vec![0x0a, 0x7f, 0x01],
    ] {
        let mut grpc = tonic::client::Grpc::new(ch.clone());
        grpc.ready().await.unwrap();
        let mut req = tonic::Request::new(RawBody(body));
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", server.dev_key).parse().unwrap(),
        );
        let path = http::uri::PathAndQuery::from_static("/huashen.v1.AvatarService/GetAvatar");
        let r: Result<tonic::Response<v1::Avatar>, _> = grpc
            .unary(
                req,
                path,
                tonic_prost::ProstCodec::<RawBody, v1::Avatar>::default(),
            )
            .await;
        let (code, msg) = code_of(r);
        assert_eq!(code, tonic::Code::InvalidArgument, "{msg}");
        assert!(msg.contains("malformed"), "{msg}");
    }
    // Still serving.
    let mut c = server.dev().await;
    c.avatars
        .list_avatars(v1::ListAvatarsRequest::default())
        .await
        .unwrap();
    server.stop().await;
}

/// Pre-encoded bytes sent as the message body.
#[derive(Clone, PartialEq, Default, Debug)]
struct RawBody(Vec<u8>);

impl prost::Message for RawBody {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        _tag: u32,
        _wire_type: prost::encoding::WireType,
        _buf: &mut impl prost::bytes::Buf,
        _ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        Ok(())
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Browsers (gRPC-Web) send the whole image in `start.inline_image`: any
/// image under the server's limit fits in that one message (a phone photo
/// of several MB, beyond the 2 MiB of other calls), and one over it gets
/// RESOURCE_EXHAUSTED naming the limit, however large it is.
#[tokio::test]
async fn inline_images_up_to_the_limit() {
    let server = TestServer::start_with(|c| c.limits.max_image_bytes = 6 * 1024 * 1024).await;
    let mut c = server.dev().await;
    c.avatars = c.avatars.clone().max_encoding_message_size(64 << 20);
    // The portrait at 1600 px with a little grain: about 4 MB of PNG.
    let img = image::load_from_memory(&portrait()).unwrap().to_rgb8();
    let mut big = image::imageops::resize(&img, 1600, 1600, image::imageops::FilterType::Triangle);
    let mut seed = 1u32;
    for p in big.pixels_mut() {
        for v in &mut p.0 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *v = v.saturating_add((seed >> 29) as u8);
        }
    }
    let mut png = std::io::Cursor::new(Vec::new());
    big.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let png = png.into_inner();
    assert!(
        (2_200_000..6 * 1024 * 1024).contains(&png.len()),
        "{} bytes",
        png.len()
    );
    let mut start = enroll_start("inline", png.len() as u64);
    start.inline_image = png;
    let avatar = avatar_of(&c.enroll_raw(start, vec![]).await.expect("enrolls"));
    assert_eq!(avatar.state, v1::AvatarState::Ready as i32);

    for size in [6 * 1024 * 1024 + 10, 9 * 1024 * 1024] {
        let mut over = b"\x89PNG\r\n\x1a\n".to_vec();
        over.resize(size, 1);
        let mut start = enroll_start("too big", 0);
        start.inline_image = over;
        assert_code(
            c.enroll_raw(start, vec![]).await,
            tonic::Code::ResourceExhausted,
            "6291456 bytes",
        );
    }
    // Still serving.
    c.avatars
        .list_avatars(v1::ListAvatarsRequest::default())
        .await
        .unwrap();
}
