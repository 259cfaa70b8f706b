from appliance.portal import create_app


def test_landing_page_names_the_building_and_says_when_empty(cfg):
    page = create_app(cfg).test_client().get("/").get_data(as_text=True)
    assert "Unit" in page
    assert "Nothing in the library yet" in page


def test_landing_page_lists_what_the_content_folder_holds(cfg):
    cfg.portal.content_dir.mkdir(parents=True)
    (cfg.portal.content_dir / "wikipedia_en_ray_charles_mini.zim").write_bytes(b"x" * 2_000_000)
    (cfg.portal.content_dir / "khan-math").mkdir()
    (cfg.portal.content_dir / ".partial").mkdir()
    page = create_app(cfg).test_client().get("/").get_data(as_text=True)
    assert "Wikipedia en ray charles mini" in page and "2.0 MB archive" in page
    assert "Khan math" in page
    assert "partial" not in page.lower()


def test_portal_has_no_admin_surface(cfg):
    client = create_app(cfg).test_client()
    for path in ("/login", "/api/fleet", "/events", "/admin"):
        assert client.get(path).status_code == 404


def test_sizes_read_like_a_file_manager():
    from appliance.portal.landing import human_size

    assert [human_size(n) for n in (0, 999, 1000, 2_000_000, 340_000_000, 1_200_000_000, 10**13)] == [
        "0 bytes", "999 bytes", "1 kB", "2.0 MB", "340 MB", "1.2 GB", "10000 GB"]


def test_file_names_cannot_inject_markup(cfg):
    cfg.portal.content_dir.mkdir(parents=True)
    (cfg.portal.content_dir / "<script>alert(1)<").mkdir()
    page = create_app(cfg).test_client().get("/").get_data(as_text=True)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;" in page
