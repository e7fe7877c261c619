//! The committed prost code is exactly what the .proto files generate.

use std::path::{Path, PathBuf};

fn generate(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile(
        [root.join("proto/client.proto"), root.join("proto/link.proto"), root.join("proto/api.proto")],
        [root.join("proto")],
    )
    .expect("proto files compile");
    prost_build::Config::new().bytes(["."]).out_dir(out).compile_fds(fds).expect("prost-build generates code");
}

#[test]
fn committed_code_matches_the_proto_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed = root.join("src/pb");
    let out: PathBuf = std::env::temp_dir().join(format!("ringgate-pb-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    generate(&out);
    let regen = std::env::var_os("RINGGATE_REGEN").is_some();
    for name in ["ringgate.client.v1.rs", "ringgate.link.v1.rs", "ringgate.api.v1.rs"] {
        let fresh = std::fs::read_to_string(out.join(name)).unwrap();
        if regen {
            std::fs::write(committed.join(name), &fresh).unwrap();
        }
        let old = std::fs::read_to_string(committed.join(name)).unwrap_or_default();
        assert!(
            old == fresh,
            "src/pb/{name} is stale: run RINGGATE_REGEN=1 cargo test -p ringgate-codec --test generated"
        );
    }
    std::fs::remove_dir_all(&out).ok();
}
