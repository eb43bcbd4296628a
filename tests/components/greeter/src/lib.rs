//! A test fixture, never deployed: a library component (no HTTP) exporting
//! the test-only interface `s3m-test:greeting/greet@0.1.0`
//! (tests/components/wit/greeting.wit). The dependency system test composes
//! it into tests/components/greeted through `[component.greeted.dependencies]`.

mod bindings {
    wit_bindgen::generate!({
        world: "s3m-test:greeting/greeter",
        path: "../wit/greeting.wit",
    });
}

use bindings::exports::s3m_test::greeting::greet::Guest;

struct Greeter;
bindings::export!(Greeter with_types_in bindings);

impl Guest for Greeter {
    fn hello(name: String) -> String {
        format!("hello, {name}")
    }
}
