fn main() {
    // Resolve every dynamic symbol when the extension loads. With lazy binding, each fork
    // child resolves on first call the symbols only children use (PyOS_AfterFork_Child …),
    // writing the GOT: a copy-on-write page fault and a symbol lookup in every child.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,now");
}
