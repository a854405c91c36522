//! Embedded migrations, one list per backend. A migration is applied once,
//! in order, and recorded in `authmd_migrations`; an applied migration is
//! never edited (add a new one instead).

pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "agent_verified",
        sql: include_str!("../../migrations/sqlite/0002_agent_verified.sql"),
    },
    Migration {
        version: 3,
        name: "claims",
        sql: include_str!("../../migrations/sqlite/0003_claims.sql"),
    },
    Migration {
        version: 4,
        name: "governance",
        sql: include_str!("../../migrations/sqlite/0004_governance.sql"),
    },
    Migration {
        version: 5,
        name: "jti_by_expiry",
        sql: include_str!("../../migrations/sqlite/0005_jti_by_expiry.sql"),
    },
    Migration {
        version: 6,
        name: "signing_keys",
        sql: include_str!("../../migrations/sqlite/0006_signing_keys.sql"),
    },
    Migration {
        version: 7,
        name: "hardening",
        sql: include_str!("../../migrations/sqlite/0007_hardening.sql"),
    },
    Migration {
        version: 8,
        name: "dialects",
        sql: include_str!("../../migrations/sqlite/0008_dialects.sql"),
    },
    Migration {
        version: 9,
        name: "mail_outbox",
        sql: include_str!("../../migrations/sqlite/0009_mail_outbox.sql"),
    },
    Migration {
        version: 10,
        name: "current_claim",
        sql: include_str!("../../migrations/sqlite/0010_current_claim.sql"),
    },
    Migration {
        version: 11,
        name: "refresh_family_size",
        sql: include_str!("../../migrations/sqlite/0011_refresh_family_size.sql"),
    },
    Migration {
        version: 12,
        name: "live_api_keys",
        sql: include_str!("../../migrations/sqlite/0012_live_api_keys.sql"),
    },
    Migration {
        version: 13,
        name: "non_null_indexes",
        sql: include_str!("../../migrations/sqlite/0013_non_null_indexes.sql"),
    },
    Migration {
        version: 14,
        name: "refresh_family_purge",
        sql: include_str!("../../migrations/sqlite/0014_refresh_family_purge.sql"),
    },
    Migration {
        version: 15,
        name: "audit_by_registration",
        sql: include_str!("../../migrations/sqlite/0015_audit_by_registration.sql"),
    },
    Migration {
        version: 16,
        name: "audit_by_kind",
        sql: include_str!("../../migrations/sqlite/0016_audit_by_kind.sql"),
    },
    Migration {
        version: 17,
        name: "audit_rowid",
        sql: include_str!("../../migrations/sqlite/0017_audit_rowid.sql"),
    },
];

pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "agent_verified",
        sql: include_str!("../../migrations/postgres/0002_agent_verified.sql"),
    },
    Migration {
        version: 3,
        name: "claims",
        sql: include_str!("../../migrations/postgres/0003_claims.sql"),
    },
    Migration {
        version: 4,
        name: "governance",
        sql: include_str!("../../migrations/postgres/0004_governance.sql"),
    },
    Migration {
        version: 5,
        name: "jti_by_expiry",
        sql: include_str!("../../migrations/postgres/0005_jti_by_expiry.sql"),
    },
    Migration {
        version: 6,
        name: "signing_keys",
        sql: include_str!("../../migrations/postgres/0006_signing_keys.sql"),
    },
    Migration {
        version: 7,
        name: "hardening",
        sql: include_str!("../../migrations/postgres/0007_hardening.sql"),
    },
    Migration {
        version: 8,
        name: "dialects",
        sql: include_str!("../../migrations/postgres/0008_dialects.sql"),
    },
    Migration {
        version: 9,
        name: "mail_outbox",
        sql: include_str!("../../migrations/postgres/0009_mail_outbox.sql"),
    },
    Migration {
        version: 10,
        name: "current_claim",
        sql: include_str!("../../migrations/postgres/0010_current_claim.sql"),
    },
    Migration {
        version: 11,
        name: "refresh_family_size",
        sql: include_str!("../../migrations/postgres/0011_refresh_family_size.sql"),
    },
    Migration {
        version: 12,
        name: "live_api_keys",
        sql: include_str!("../../migrations/postgres/0012_live_api_keys.sql"),
    },
    Migration {
        version: 13,
        name: "non_null_indexes",
        sql: include_str!("../../migrations/postgres/0013_non_null_indexes.sql"),
    },
    Migration {
        version: 14,
        name: "refresh_family_purge",
        sql: include_str!("../../migrations/postgres/0014_refresh_family_purge.sql"),
    },
    Migration {
        version: 15,
        name: "audit_by_registration",
        sql: include_str!("../../migrations/postgres/0015_audit_by_registration.sql"),
    },
    Migration {
        version: 16,
        name: "audit_by_kind",
        sql: include_str!("../../migrations/postgres/0016_audit_by_kind.sql"),
    },
    Migration {
        version: 17,
        name: "audit_rowid",
        sql: include_str!("../../migrations/postgres/0017_audit_rowid.sql"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_migrations_in_order() {
        let names = |m: &[Migration]| m.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(names(SQLITE), names(POSTGRES));
        for (i, m) in SQLITE.iter().enumerate() {
            assert_eq!(m.version, i64::try_from(i).unwrap_or(-1) + 1);
        }
    }
}
