//! A valid component of some other world: it exports `greet` and none of sandflow's
//! functions, so the engine must refuse it as a bundle.
wit_bindgen::generate!({
    inline: "
        package test:other;
        world other {
            export greet: func(name: string) -> string;
        }
    ",
});

struct Other;

impl Guest for Other {
    fn greet(name: String) -> String {
        format!("hi {name}")
    }
}

export!(Other);
