//! Helpers: a site on a temp home, request builders, and the "nothing changed" check.

use flashtrack::control::{Capacity, ItemOutcome, Reply, Request, Response, VolumeSpec};
use flashtrack::error::ErrorKind;
use flashtrack::geometry::CapType;
use flashtrack::id::{ImageId, PoolId, VolumeId};
use flashtrack::image::record::Sam;
use flashtrack::io::IoEngine;
use flashtrack::site::Site;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The I/O backend under test: `FLASHTRACK_IO` as flashd would choose it.
pub fn io() -> Arc<dyn IoEngine> {
    flashtrack::io::probe::select().expect("io backend")
}

pub struct TestSite {
    dir: tempfile::TempDir,
    site: Option<Site>,
}

impl TestSite {
    pub fn new() -> TestSite {
        let dir = tempfile::tempdir().unwrap();
        let site = Site::open(dir.path(), io()).unwrap();
        TestSite { dir, site: Some(site) }
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    pub fn io(&self) -> Arc<dyn IoEngine> {
        self.site().io().clone()
    }

    pub fn site(&self) -> &Site {
        self.site.as_ref().unwrap()
    }

    /// Close the site (releases the home lock), keeping the home.
    pub fn close(&mut self) {
        self.site = None;
    }

    /// Close and reopen the site, as a daemon restart does.
    pub fn restart(&mut self) {
        self.site = None;
        self.site = Some(Site::open(self.dir.path(), io()).unwrap());
    }

    pub fn id(&self, s: &str) -> ImageId {
        s.parse().unwrap()
    }

    pub fn image(&self, s: &str) -> ImageId {
        let id = self.id(s);
        self.ok(Request::ImageCreate { id: id.clone() });
        id
    }

    pub fn ok(&self, req: Request) -> Reply {
        match self.site().handle(req) {
            Response::Ok(r) => r,
            Response::Err(e) => panic!("unexpected error {e}"),
        }
    }

    pub fn err(&self, req: Request) -> ErrorKind {
        match self.site().handle(req) {
            Response::Ok(r) => panic!("expected an error, got {r:?}"),
            Response::Err(e) => e.kind,
        }
    }

    /// The error of a single-item request.
    pub fn item_err(&self, req: Request) -> ErrorKind {
        match self.site().handle(req) {
            Response::Ok(Reply::Items(items)) => {
                assert_eq!(items.len(), 1);
                items[0].result.as_ref().expect_err("expected the item to fail").kind
            }
            other => panic!("expected one item, got {other:?}"),
        }
    }

    /// Run `f` (which must only fail) and check the image's catalog and files are unchanged.
    pub fn unchanged(&self, image: &ImageId, f: impl FnOnce(&TestSite)) {
        let before = self.snapshot(image);
        f(self);
        assert_eq!(self.snapshot(image), before, "a failed request changed the image");
    }

    fn snapshot(&self, image: &ImageId) -> (Vec<u8>, Vec<PathBuf>) {
        let dir = self.home().join(image.to_string());
        let cat = std::fs::read(dir.join("catalog")).unwrap();
        let mut files = Vec::new();
        walk(&dir, &mut files);
        files.sort();
        (cat, files)
    }

    pub fn volume_files(&self, image: &ImageId) -> usize {
        let mut files = Vec::new();
        walk(&self.home().join(image.to_string()), &mut files);
        files.iter().filter(|f| f.extension().is_some_and(|e| e == "vol")).count()
    }

    pub fn volume_path(&self, image: &ImageId, vol: u16) -> PathBuf {
        self.home().join(format!("{image}/pools/P0/{image}_{vol:04X}.vol"))
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

/// mkfbvol of `gib` GiB ese volumes in pool `pool`.
pub fn fb(image: &ImageId, pool: u16, gib: u64, vols: &[u16]) -> Request {
    let spec =
        VolumeSpec { pool: PoolId(pool), capacity: Capacity::Fb { cap: gib, captype: CapType::Ds }, sam: Sam::Ese };
    Request::VolumeCreate {
        image: image.clone(),
        spec,
        volumes: vols.iter().map(|v| (VolumeId(*v), format!("v{v:04X}"))).collect(),
    }
}

/// Image IBM.2107-75FA120 with ese FB volumes 1000 and 1001 of `tracks` tracks each (the
/// FlashCopy tests' pair).
pub fn fb_pair(t: &TestSite, tracks: u64) -> ImageId {
    let img = t.image("IBM.2107-75FA120");
    let spec = VolumeSpec {
        pool: PoolId(0),
        capacity: Capacity::Fb { cap: tracks * 128, captype: CapType::Blocks },
        sam: Sam::Ese,
    };
    items_ok(t.ok(Request::VolumeCreate {
        image: img.clone(),
        spec,
        volumes: vec![(VolumeId(0x1000), String::new()), (VolumeId(0x1001), String::new())],
    }));
    img
}

/// mkckdvol of `cyl` cylinders.
pub fn ckd(image: &ImageId, pool: u16, cyl: u64, vols: &[u16]) -> Request {
    let spec = VolumeSpec { pool: PoolId(pool), capacity: Capacity::Ckd { cylinders: cyl }, sam: Sam::Ese };
    Request::VolumeCreate {
        image: image.clone(),
        spec,
        volumes: vols.iter().map(|v| (VolumeId(*v), String::new())).collect(),
    }
}

pub fn items_ok(reply: Reply) -> Vec<ItemOutcome> {
    let Reply::Items(items) = reply else { panic!("expected items, got {reply:?}") };
    for i in &items {
        assert!(i.result.is_ok(), "item {} failed: {:?}", i.object, i.result);
    }
    items
}

/// The reply of a request that must succeed, on a site opened by the test itself.
pub fn site_ok(site: &Site, req: Request) -> Reply {
    match site.handle(req) {
        Response::Ok(r) => r,
        Response::Err(e) => panic!("unexpected error {e}"),
    }
}
