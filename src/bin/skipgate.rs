fn main() {
    println!("skipgate {}", env!("CARGO_PKG_VERSION"));
}
