//! TLS to PostgreSQL (issue 17 item 3), against a real server with TLS on:
//! a cluster of the test's own with a generated certificate for `localhost`.

use crate::pg_cluster::Cluster;

fn certificate() -> (String, String) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

async fn open(url: &str) -> Result<(), String> {
    match authmd::store::open(url, 2).await {
        Ok(store) => {
            store.migrate().await.map_err(|e| e.to_string())?;
            store.ping().await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
#[cfg_attr(
    authmd_no_postgres,
    ignore = "needs TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres) and PostgreSQL's server binaries"
)]
async fn verify_full_connects_to_the_right_host_and_ca_and_refuses_the_rest() {
    let (cert, key) = certificate();
    let (other_ca, _) = certificate();
    let cluster = Cluster::start(Some((&cert, &key)));
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let wrong_ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, &cert).expect("write");
    std::fs::write(&wrong_ca, &other_ca).expect("write");
    let root = |f: &std::path::Path| format!("sslrootcert={}", f.display());

    // The right CA and host: connected, migrated, and the session is TLS.
    let url = cluster.url("localhost", &format!("?sslmode=verify-full&{}", root(&ca)));
    open(&url)
        .await
        .unwrap_or_else(|e| panic!("verify-full: {e}"));
    let store = authmd::store::open(&url, 1).await.expect("open");
    drop(store);
    let tls = tls_in_use(&url).await;
    assert!(tls, "the session is encrypted");

    // The wrong host: the certificate names only localhost.
    let e = open(&cluster.url("127.0.0.1", &format!("?sslmode=verify-full&{}", root(&ca))))
        .await
        .expect_err("wrong host refused");
    assert!(
        e.contains("sslmode=verify-full") && e.contains("certificate not valid for name"),
        "{e}"
    );

    // The wrong CA.
    let e = open(&cluster.url(
        "localhost",
        &format!("?sslmode=verify-full&{}", root(&wrong_ca)),
    ))
    .await
    .expect_err("wrong CA refused");
    assert!(
        e.contains("sslmode=verify-full") && e.contains("invalid peer certificate"),
        "{e}"
    );

    // verify-ca checks the chain, not the name.
    open(&cluster.url("127.0.0.1", &format!("?sslmode=verify-ca&{}", root(&ca))))
        .await
        .unwrap_or_else(|e| panic!("verify-ca: {e}"));
    let e = open(&cluster.url(
        "127.0.0.1",
        &format!("?sslmode=verify-ca&{}", root(&wrong_ca)),
    ))
    .await
    .expect_err("verify-ca with the wrong CA refused");
    assert!(e.contains("invalid peer certificate"), "{e}");

    // require encrypts without checking (libpq's meaning); disable does not encrypt.
    open(&cluster.url("127.0.0.1", "?sslmode=require"))
        .await
        .unwrap_or_else(|e| panic!("require: {e}"));
    assert!(tls_in_use(&cluster.url("127.0.0.1", "?sslmode=require")).await);
    assert!(!tls_in_use(&cluster.url("127.0.0.1", "?sslmode=disable")).await);

    // A mode libpq does not have, or verify-full without a root, is a
    // configuration error, not a silent downgrade.
    let e = open(&cluster.url("localhost", "?sslmode=verify-everything"))
        .await
        .expect_err("unknown mode");
    assert!(e.contains("sslmode"), "{e}");
    let e = open(&cluster.url("localhost", "?sslmode=verify-full"))
        .await
        .expect_err("no root");
    assert!(e.contains("sslrootcert"), "{e}");
}

/// Whether the server sees this connection as TLS (`pg_stat_ssl`).
async fn tls_in_use(url: &str) -> bool {
    let settings = authmd::store::postgres::tls::settings(url).expect("settings");
    let config: tokio_postgres::Config = settings.url.parse().expect("config");
    let (client, conn) = config
        .connect(settings.connector().expect("connector"))
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}
