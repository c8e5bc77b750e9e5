//! Docker, driven through its API (bollard): bring-up, attach, teardown, inventory, images.
//!
//! The compose file the docker backend rendered is the single source of truth: [`project`]
//! reads it back into typed values, and [`up`] creates exactly that, with the labels
//! `docker compose` uses, so `docker compose -p bottle-<slug>` (or `docker-compose -p … -f …`)
//! can also `ps`, `logs` and `down` a bottle.

pub mod admit;
pub mod attach;
pub mod down;
pub mod handoff;
pub mod helper;
pub mod images;
pub mod inventory;
pub mod kept;
pub mod names;
pub mod pool;
pub mod project;
pub mod shared;
pub mod up;
pub mod watch;

use bollard::Docker;

/// A Docker failure; Docker's own message is always part of it.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The daemon cannot be reached.
    #[error(
        "cannot reach Docker at {host}: {detail}; is the daemon running and DOCKER_HOST right?"
    )]
    Unreachable {
        /// Where bottle looked.
        host: String,
        /// What failed.
        detail: String,
    },
    /// An API call failed.
    #[error("docker: {what}: {detail}")]
    Api {
        /// What bottle was doing.
        what: String,
        /// Docker's message.
        detail: String,
    },
    /// A container's health check failed or timed out.
    #[error("container {container} did not become healthy: {detail}\nits last log lines:\n{logs}")]
    Unhealthy {
        /// The container.
        container: String,
        /// Why.
        detail: String,
        /// Its last log lines.
        logs: String,
    },
    /// A bottle of that name already exists (an orphan of an earlier run).
    #[error(
        "{what} already exists: an earlier run of bottle {slug} left it behind; `bottle stop {slug}` removes it (logs kept), then try again"
    )]
    Orphan {
        /// The container or project.
        what: String,
        /// The bottle's slug.
        slug: String,
    },
    /// Something not bottle's holds a name this bottle needs.
    #[error(
        "container {name} already exists and is not bottle's (it has no bottle labels), so `bottle cleanup` leaves it alone; remove it yourself (`docker rm -f {name}`) or run with another --slug"
    )]
    NameTaken {
        /// The container.
        name: String,
    },
    /// The compose file could not be used, or its secrets are missing.
    #[error(transparent)]
    Project(#[from] project::ProjectError),
    /// Something on the host side failed (a file, the terminal).
    #[error("{0}")]
    Host(String),
}

/// The message inside a bollard error: Docker's own text when it sent one.
pub fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            message,
            status_code,
        } => {
            format!("{} (HTTP {status_code})", message.trim())
        }
        other => other.to_string(),
    }
}

/// Wrap a bollard error with what bottle was doing.
pub fn api(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let what = what.into();
    move |e| DockerError::Api {
        what,
        detail: docker_message(&e),
    }
}

/// A removal's result with "gone already" (404) as done: another teardown, or the user, got
/// there first.
pub fn gone_is_done(r: Result<(), bollard::errors::Error>) -> Result<(), bollard::errors::Error> {
    match r {
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        other => other,
    }
}

/// The engine's `die` events of `container` (a name or an id) from `since` (unix seconds) on:
/// a death between `since` and the stream's opening is replayed, not missed. By name, a
/// container of an earlier run of the same slug is matched too; by id, this one alone.
pub fn die_events(
    docker: &Docker,
    container: &str,
    since: u64,
) -> impl futures_util::Stream<Item = Result<bollard::models::EventMessage, bollard::errors::Error>>
+ use<> {
    let filters = std::collections::HashMap::from([
        ("type", vec!["container"]),
        ("container", vec![container]),
        ("event", vec!["die"]),
    ]);
    docker.events(Some(
        bollard::query_parameters::EventsOptionsBuilder::new()
            .since(&since.to_string())
            .filters(&filters)
            .build(),
    ))
}

/// Now, in whole unix seconds: [`die_events`]'s `since`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where bottle connects: `DOCKER_HOST`, else the local socket.
pub fn docker_host() -> String {
    // bollard's `connect_with_defaults` reads DOCKER_HOST itself; this names what it reached.
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| crate::hostenv::DEFAULT_DOCKER_HOST.to_owned())
}

/// Connect, agree on an API version the daemon speaks, and check it answers.
pub async fn connect() -> Result<Docker, DockerError> {
    let host = docker_host();
    let unreachable = |detail: String| DockerError::Unreachable {
        host: host.clone(),
        detail,
    };
    let docker = Docker::connect_with_defaults().map_err(|e| unreachable(docker_message(&e)))?;
    let docker = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        docker.negotiate_version(),
    )
    .await
    .map_err(|_| unreachable("no answer within 10 s".into()))?
    .map_err(|e| unreachable(docker_message(&e)))?;
    docker
        .ping()
        .await
        .map_err(|e| unreachable(docker_message(&e)))?;
    Ok(docker)
}
