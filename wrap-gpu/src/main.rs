#![forbid(unsafe_code)]

fn main() {
    // Fail closed until this program exists: never pretend to sandbox.
    eprintln!("wrap-gpu: not implemented yet");
    std::process::exit(111);
}
