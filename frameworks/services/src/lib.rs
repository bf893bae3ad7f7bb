//! `agora-services`: Agora's services framework, a Marathon-compatible
//! scheduler for long-running apps. Users POST JSON app definitions to its
//! REST API (Marathon's v2 API); it keeps that many instances running,
//! scales them, replaces them in rolling upgrades, and heals them when tasks
//! or agents die. Guide: `docs/services.md`.

pub mod app;
pub mod constraint;
pub mod deployment;
pub mod error;
pub mod health;
pub mod instance;
pub mod path_id;
pub mod refusal;
pub mod state;
pub mod store;
pub mod time;
pub mod validation;

pub use error::ServicesError;
pub use runtime::{FRAMEWORK_NAME, RunningServices, ServicesConfig, run, start};
pub mod api;
pub mod command;
pub mod controller;
pub mod events;
pub mod groups;
pub mod metrics;
pub mod openapi;
pub mod queue;
pub mod render;
pub mod runtime;
pub mod taskinfo;
