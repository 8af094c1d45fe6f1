//! [`SecretStore`] on PostgreSQL: the `secrets` table (values in plain text; see the migration).

use super::PgStore;
use crate::error::StoreResult;
use crate::store::{SecretInfo, SecretStore};
use async_trait::async_trait;
use std::collections::HashMap;

#[async_trait]
impl SecretStore for PgStore {
    async fn secret_values(&self, names: &[String]) -> StoreResult<HashMap<String, String>> {
        let rows = sqlx::query!(
            "select name, value from secrets where name = any($1)",
            names
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.name, r.value)).collect())
    }

    async fn existing_secrets(&self, names: &[String]) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar!("select name from secrets where name = any($1)", names)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn put_secret(&self, name: &str, value: &str) -> StoreResult<(SecretInfo, bool)> {
        // `xmax = 0` only for a freshly inserted row: tells a create from a replace in one
        // statement.
        let row = sqlx::query!(
            r#"
            insert into secrets (name, value) values ($1, $2)
            on conflict (name) do update set value = excluded.value, updated_at = now()
            returning name, created_at, updated_at, (xmax = 0) as "created!"
            "#,
            name,
            value,
        )
        .fetch_one(&self.pool)
        .await?;
        let info = SecretInfo {
            name: row.name,
            created_at: row.created_at,
            updated_at: row.updated_at,
        };
        Ok((info, row.created))
    }

    async fn secrets(&self) -> StoreResult<Vec<SecretInfo>> {
        Ok(sqlx::query_as!(
            SecretInfo,
            "select name, created_at, updated_at from secrets order by name"
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn delete_secret(&self, name: &str) -> StoreResult<bool> {
        let deleted = sqlx::query!("delete from secrets where name = $1", name)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }
}
