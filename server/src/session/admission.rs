//! Admission control: how many sessions may be open on the server and per
//! tenant. A [`Permit`] holds one slot and gives it back when dropped, so a
//! slot is freed however a session ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_tenant: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_tenant: HashMap<String, usize>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    ServerFull { max: usize },
    TenantFull { max: usize },
}

impl Admission {
    pub fn new(max_total: usize, max_per_tenant: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_tenant,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Counts are updated in single statements; a poisoned lock holds
        // consistent numbers.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for `tenant_id`, or says which limit is reached.
    pub fn admit(self: &Arc<Self>, tenant_id: &str) -> Result<Permit, Refusal> {
        let mut c = self.lock();
        if c.total >= self.max_total {
            return Err(Refusal::ServerFull {
                max: self.max_total,
            });
        }
        let n = c.per_tenant.get(tenant_id).copied().unwrap_or(0);
        if n >= self.max_per_tenant {
            return Err(Refusal::TenantFull {
                max: self.max_per_tenant,
            });
        }
        c.total += 1;
        c.per_tenant.insert(tenant_id.to_owned(), n + 1);
        Ok(Permit {
            admission: self.clone(),
            tenant_id: tenant_id.to_owned(),
        })
    }

    /// Open sessions (server total, this tenant).
    pub fn counts(&self, tenant_id: &str) -> (usize, usize) {
        let c = self.lock();
        (c.total, c.per_tenant.get(tenant_id).copied().unwrap_or(0))
    }
}

#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    tenant_id: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.admission.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_tenant.get_mut(&self.tenant_id) {
            *n -= 1;
            if *n == 0 {
                c.per_tenant.remove(&self.tenant_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_release() {
        let a = Admission::new(3, 2);
        let p1 = a.admit("t1").unwrap();
        let _p2 = a.admit("t1").unwrap();
        assert_eq!(a.admit("t1").unwrap_err(), Refusal::TenantFull { max: 2 });
        let _p3 = a.admit("t2").unwrap();
        assert_eq!(a.admit("t3").unwrap_err(), Refusal::ServerFull { max: 3 });
        drop(p1);
        assert_eq!(a.counts("t1"), (2, 1));
        let _p4 = a.admit("t1").unwrap();
    }
}
