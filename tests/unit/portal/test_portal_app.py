
from appliance.content import library
from appliance.portal.app import create_app
from tests.conftest import SHARED

ZIM = SHARED / "data" / "zim"


def test_landing_page_names_the_building_and_says_when_empty(cfg):
    page = create_app(cfg).test_client().get("/").get_data(as_text=True)
    assert "Unit" in page
    assert "Nothing in the library yet" in page


def test_front_page_lists_the_library_with_links_to_the_archive_origin(cfg, store_for):
    store = store_for(cfg)
    library.add_zim(store, ZIM / "wikipedia_en_ray_charles_mini.zim")
    page = create_app(cfg).test_client().get("/", base_url="http://school.lan").get_data(as_text=True)
    assert "Ray Charles" in page and "569 kB archive" in page
    assert 'href="http://school.lan:8090/content/wikipedia_en_ray_charles/"' in page


def test_portal_has_no_admin_surface(cfg):
    client = create_app(cfg).test_client()
    for path in ("/login", "/api/fleet", "/events", "/admin"):
        assert client.get(path).status_code == 404


def test_sizes_read_like_a_file_manager():
    from appliance.portal.landing import human_size

    assert [human_size(n) for n in (0, 999, 1000, 2_000_000, 340_000_000, 1_200_000_000, 10**13)] == [
        "0 bytes", "999 bytes", "1 kB", "2.0 MB", "340 MB", "1.2 GB", "10000 GB"]


def test_titles_cannot_inject_markup(cfg, store_for, tmp_path):
    folder = tmp_path / "pack"
    folder.mkdir()
    (folder / "index.html").write_text("<p>x</p>")
    library.add_pack(store_for(cfg), folder, title="<script>alert(1)<")
    page = create_app(cfg).test_client().get("/").get_data(as_text=True)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;" in page
