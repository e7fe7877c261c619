fn main() {
    eprintln!("ringgate: the gateway data plane is not built yet");
    std::process::exit(2);
}
