//! The upload ceiling for `scripts/bench.sh`: a plain aws-sdk-s3 multipart upload of a file's
//! bytes, already in memory, with the same part size, parallelism and request options rdbvault
//! uses (no SigV4 payload hash, the SDK's CRC32 part checksums). Nothing is downloaded, hashed
//! or verified, so this is as fast as the S3 server and the SDK go on this machine; rdbvault's
//! end-to-end time is compared against it. `--signed-payload` measures the SDK's default
//! instead (a SHA-256 of every part for SigV4).
//!
//! ```text
//! cargo bench --bench upload_ceiling -- --endpoint http://127.0.0.1:8333 --bucket B \
//!     --key K --file payload.rdb [--part-size 16777216] [--concurrency 4]
//! ```
//!
//! Credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`. It prints one line:
//! `upload_ceiling bytes=N seconds=S mib_per_s=T`. The object is deleted afterwards.
//!
//! `cargo test --benches` runs every bench target once as a smoke test; without `--endpoint`
//! this one has no server to talk to, so it only checks that its arguments parse and says so.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

struct Args {
    endpoint: Option<String>,
    bucket: String,
    key: String,
    file: Option<std::path::PathBuf>,
    part_size: usize,
    concurrency: usize,
    signed_payload: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        endpoint: None,
        bucket: String::new(),
        key: "upload-ceiling.bin".into(),
        file: None,
        part_size: 16 << 20,
        concurrency: 4,
        signed_payload: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue; // added by `cargo bench`
        }
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint" => args.endpoint = Some(value()?),
            "--bucket" => args.bucket = value()?,
            "--key" => args.key = value()?,
            "--file" => args.file = Some(value()?.into()),
            "--signed-payload" => args.signed_payload = true,
            "--part-size" => {
                args.part_size = value()?.parse().map_err(|e| format!("--part-size: {e}"))?
            }
            "--concurrency" => {
                args.concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.part_size < 5 << 20 {
        return Err("--part-size must be at least 5 MiB (S3's minimum)".into());
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    Ok(args)
}

async fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .endpoint_url(endpoint)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

async fn upload(
    client: &aws_sdk_s3::Client,
    args: &Args,
    data: Bytes,
) -> Result<(), Box<dyn std::error::Error>> {
    let created = client
        .create_multipart_upload()
        .bucket(&args.bucket)
        .key(&args.key)
        .send()
        .await?;
    let upload_id: Arc<str> = created.upload_id().unwrap_or_default().into();
    let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, start) in (0..data.len()).step_by(args.part_size).enumerate() {
        let permit = permits.clone().acquire_owned().await?;
        let part = data.slice(start..(start + args.part_size).min(data.len()));
        let (client, bucket, key, upload_id) = (
            client.clone(),
            args.bucket.clone(),
            args.key.clone(),
            upload_id.clone(),
        );
        let number = index as i32 + 1;
        let signed = args.signed_payload;
        tasks.spawn(async move {
            let request = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id.as_ref())
                .part_number(number)
                .content_length(part.len() as i64)
                .body(ByteStream::from(part))
                .customize();
            let out = if signed {
                request.send().await
            } else {
                request.disable_payload_signing().send().await
            };
            drop(permit);
            out.map(|o| {
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(o.e_tag().unwrap_or_default())
                    .build()
            })
        });
    }
    let mut parts = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        parts.push(joined??);
    }
    parts.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(&args.bucket)
        .key(&args.key)
        .upload_id(upload_id.as_ref())
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("upload_ceiling: {e}");
            std::process::exit(2);
        }
    };
    let (Some(endpoint), Some(file)) = (args.endpoint.clone(), args.file.clone()) else {
        println!(
            "upload_ceiling: arguments parse; give --endpoint, --bucket and --file to measure (scripts/bench.sh does)"
        );
        return;
    };
    let data = match std::fs::read(&file) {
        Ok(d) => Bytes::from(d),
        Err(e) => {
            eprintln!("upload_ceiling: cannot read {}: {e}", file.display());
            std::process::exit(1);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let client = client(&endpoint).await;
        let len = data.len();
        let started = Instant::now();
        if let Err(e) = upload(&client, &args, data).await {
            eprintln!(
                "upload_ceiling: upload failed: {}",
                aws_sdk_s3::error::DisplayErrorContext(e.as_ref())
            );
            std::process::exit(1);
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "upload_ceiling bytes={len} seconds={seconds:.3} mib_per_s={:.1}",
            len as f64 / seconds / (1 << 20) as f64
        );
        let _ = client
            .delete_object()
            .bucket(&args.bucket)
            .key(&args.key)
            .send()
            .await;
    });
}
