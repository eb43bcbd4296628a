//! A test fixture, never deployed: an HTTP component that imports the
//! test-only interface `s3m-test:greeting/greet@0.1.0`
//! (tests/components/wit/greeting.wit), which no host provides: only a
//! `[component.greeted.dependencies]` entry composing tests/components/greeter
//! in makes it loadable.
//! - `/greeted/<name>`: answers 200 with the greeter's `hello(<name>)`.

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        world: "s3m-test:greeting/greeted",
        path: "../wit/greeting.wit",
        runtime_path: "spin_sdk::wit_bindgen::rt",
    });
}

use bindings::s3m_test::greeting::greet;
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    Ok(match req.path().strip_prefix("/greeted/") {
        Some(name) if !name.is_empty() && !name.contains('/') => {
            Response::new(200, greet::hello(name))
        }
        _ => Response::new(404, "no such fixture route"),
    })
}
