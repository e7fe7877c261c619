//! An authoritative DNS responder on loopback answering A queries from state the test changes
//! (records with a TTL, SERVFAIL, or an empty answer), for tests of DNS discovery.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

#[derive(Debug, Clone)]
pub enum Answer {
    Records(Vec<Ipv4Addr>, u32),
    ServFail,
    Empty,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    pub fn start(answer: Answer) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = socket.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (answer.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else { continue };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let mut response = Message::response(query.metadata.id, query.metadata.op_code);
                response.metadata.authoritative = true;
                response.queries = query.queries.clone();
                match a.lock().unwrap().clone() {
                    Answer::Records(ips, ttl) => {
                        for q in query.queries.iter().filter(|q| q.query_type() == RecordType::A) {
                            for ip in &ips {
                                response.answers.push(Record::from_rdata(q.name().clone(), ttl, RData::A(A(*ip))));
                            }
                        }
                    }
                    Answer::ServFail => response.metadata.response_code = ResponseCode::ServFail,
                    Answer::Empty => {}
                }
                let _ = socket.send_to(&response.to_vec().unwrap(), peer);
            }
        });
        DnsServer { addr, answer, stop, thread: Some(thread) }
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
